"""scripts/bench_autoregressive.py --quick runs and writes finite numbers for every library."""

from __future__ import annotations

import json
import math

import pytest

from tests.scripts.script_loader import load_script as load_named_script


def load_script():
    return load_named_script("bench_autoregressive")


@pytest.mark.usefixtures("single_thread")
def test_quick_run_writes_finite_numbers(tmp_path, capsys):
    bench = load_script()
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    assert "glowlab" in data["results"]
    for lib, r in data["results"].items():
        numbers = [r["params"], r["density_samples_per_s"], r["sampling_samples_per_s"], *r["bpd"], r["bpd_mean"]]
        assert all(math.isfinite(v) and v > 0 for v in numbers), (lib, r)
        assert len(r["bpd"]) == 2 and all(s > 0 for s in r["train_steps"])
    params = [r["params"] for r in data["results"].values()]
    assert max(params) / min(params) < 1.1, "parameter counts are not matched"
    assert "| glowlab |" in capsys.readouterr().out


def test_bad_arguments_are_refused():
    bench = load_script()
    for argv in (["--libs", "glowlab,pyro"], ["--budget", "0"], ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            bench.parse(argv)


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_quick_run_of_the_glow_prior_comparison(tmp_path):
    bench = load_script()
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--libs", "glow,glow_ar,glow_arstep", "--out", str(out)])
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"glow", "glow_ar", "glow_arstep"}
    assert results["glow_ar"]["params"] > results["glow"]["params"]
    assert all(math.isfinite(r["bpd_mean"]) for r in results.values())
