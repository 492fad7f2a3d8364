"""notebooks/variational_inference.ipynb runs top to bottom in its quick mode (test_notebooks checks it is committed
clean): the printed ELBOs are finite bounds on the quadrature log Z, and the VAE section trains and samples."""

from __future__ import annotations

import math
import re

import pytest

from tests.analysis.test_notebooks import execute, image_count, outputs_text

NAME = "variational_inference.ipynb"
FIT = re.compile(r"(planar|radial) K=\s*(\d+) on (U\d), .*?: ELBO (\S+) ± (\S+), log Z (\S+), "
                 r"KL = log Z - ELBO (\S+) nats")
VAE = re.compile(r"-ELBO (\S+), IWAE \(k=\d+\) -log p\(x\) (\S+) ± (\S+) nats per image")


@pytest.mark.slow
def test_variational_inference_notebook_runs_in_quick_mode(monkeypatch):
    monkeypatch.setenv("GLOWLAB_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = execute(NAME)
    text = outputs_text(nb)
    assert "QUICK mode" in text
    images = image_count(nb)
    assert images == 5  # four targets, planar samples per K, ELBO/KL against K, radial fit, VAE samples

    log_z = dict(re.findall(r"(U\d) (-?[0-9.]+)", text.split("log Z by quadrature (nats): ")[1].splitlines()[0]))
    assert sorted(log_z) == ["U1", "U2", "U3", "U4"] and all(math.isfinite(float(v)) for v in log_z.values())

    fits = FIT.findall(text)
    assert [(kind, int(k)) for kind, k, *_ in fits] == [("planar", 2), ("planar", 8), ("planar", 32), ("radial", 32)]
    for kind, k, target, elbo, se, lz, kl in fits:
        elbo, se, lz, kl = map(float, (elbo, se, lz, kl))
        assert all(math.isfinite(v) for v in (elbo, se, lz, kl)) and se > 0, (kind, k, elbo, se)
        assert lz == pytest.approx(float(log_z[target]), abs=1e-4)  # the quadrature log Z of the same target
        assert kl == pytest.approx(lz - elbo, abs=2e-4)
        # the ELBO bounds log Z: KL may dip below 0 only by Monte-Carlo error
        assert kl > -4 * se - 1e-3, f"{kind} K={k} on {target}: KL {kl} < 0 beyond its standard error {se}"
    assert "InverseNotAvailable: Radial has no inverse" in text

    neg_elbo, nll, nll_se = map(float, VAE.search(text).groups())
    assert all(math.isfinite(v) for v in (neg_elbo, nll, nll_se))
    assert 0 < nll <= neg_elbo + 4 * nll_se  # the IWAE estimate is at least the ELBO, up to its error
    assert neg_elbo < 64 * math.log(2)  # trained: better than a coin per pixel (44.4 nats for 64 pixels)
    assert "decoded 64 samples from the prior" in text
