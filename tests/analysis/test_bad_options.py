"""sample.py and score.py refuse bad options with an error naming the option, before any work
(issue 10, items 17 and 19)."""

from __future__ import annotations

import shutil

import pytest

from glowlab.analysis import sampling, scoring
from glowlab.analysis.cli import _sample
from glowlab.analysis.sampling import sample_to_file
from tests.training.conftest import compose_config, run_script


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a checkpoint is loaded: the error must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the bad option was refused")

    monkeypatch.setattr(sampling, "load_model", refuse)
    monkeypatch.setattr(scoring, "load_model", refuse)


@pytest.mark.parametrize("n", [0, -5, 2.5, True])
def test_sample_count_must_be_positive(tiny_ckpt, tmp_path, no_loading, n):
    with pytest.raises(ValueError, match=rf"n= must be an integer >= 1.*got n={n!r}"):
        sample_to_file(tiny_ckpt, "grid", n=n, out=tmp_path / "x.png")


@pytest.mark.parametrize("t", [-1, -0.01, float("nan"), float("inf")])
def test_negative_or_non_finite_temperature_is_refused(tiny_ckpt, tmp_path, no_loading, t):
    with pytest.raises(ValueError, match=r"temperature= must be a finite number >= 0"):
        sample_to_file(tiny_ckpt, "grid", temperature=t, out=tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"temperatures= must be a finite number >= 0"):
        sample_to_file(tiny_ckpt, "temperatures", temperatures=[0.5, t], out=tmp_path / "x.png")


@pytest.mark.parametrize("option", [{"nrow": 0}, {"pairs": 0}, {"steps": 1}, {"mode": "grids"}])
def test_other_options(tiny_ckpt, tmp_path, no_loading, option):
    name = next(iter(option))
    with pytest.raises(ValueError, match=rf"{name}= must"):
        sample_to_file(tiny_ckpt, out=tmp_path / "x.png", **option)


def test_unwritable_output_is_found_before_any_work(tiny_ckpt, tmp_path, no_loading):
    """out= inside something that is not a folder, and the default output folder of a run whose
    samples/ cannot be created (as on a read-only disk): OSError naming out=, nothing loaded."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"cannot write to .*file.*pass out="):
        sample_to_file(tiny_ckpt, "grid", out=blocker / "grid.png")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_ckpt, run / "checkpoints" / "best.ckpt")
    (run / "samples").write_text("")  # the default output folder cannot be made
    with pytest.raises(OSError, match=r"samples.*pass out="):
        sample_to_file(run / "checkpoints" / "best.ckpt", "grid")


def test_config_values_reach_the_checks(tiny_ckpt, tmp_path, no_loading):
    """Through the composed sample.yaml: Hydra passes n=0 and temperature=-1 as given."""
    for override, msg in (("n=0", "n= must be an integer >= 1"), ("temperature=-1", "temperature= must be"),
                          ("mode=nope", "mode= must be one of .*'directions', 'manipulate'")):
        cfg = compose_config("sample", [f"ckpt_path={tiny_ckpt}", override, f"out={tmp_path / 'x.png'}"], tmp_path)
        with pytest.raises(ValueError, match=msg):
            _sample.__wrapped__(cfg)


@pytest.mark.slow
def test_cli_reports_the_option(tiny_ckpt, tmp_path):
    proc = run_script("sample.py", f"ckpt_path={tiny_ckpt}", "n=0", f"out={tmp_path / 'x.png'}",
                      f"hydra.run.dir={tmp_path / 'hydra'}")
    assert proc.returncode != 0 and "n= must be an integer >= 1" in proc.stderr, proc.stderr[-2000:]
    assert "ZeroDivisionError" not in proc.stderr and not (tmp_path / "x.png").exists()


def test_misspelt_ood_set_lists_the_builtin_transforms(tiny_ckpt, tmp_path, no_loading):
    with pytest.raises(ValueError, match=r"ood_data='nosie'.*noise, inverted, shuffled_pixels.*digits.*"
                                         r"did you mean ood_data=noise\?"):
        scoring.score_checkpoint(tiny_ckpt, "nosie", out=tmp_path)
