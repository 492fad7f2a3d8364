"""score.py: per-image bits/dim that match eval.py, OOD sets, AUROC, importance-weighted bounds."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from glowlab.analysis.loading import load_model
from glowlab.analysis.ood import TRANSFORMS, ood_data_config, transform_batch
from glowlab.analysis.scoring import _batches, auroc, image_bpd, log_mean_exp_bpd, score_checkpoint
from glowlab.training.run import evaluate
from tests.analysis.conftest import read_json
from tests.training.conftest import compose_config, run_script


def test_score_cli_csv_matches_eval_and_separates_noise(tiny_ckpt, tmp_path):
    """One CSV row per image of the test set and of the noise set; the test rows' mean bpd equals
    eval.py's test bpd on the same checkpoint; digits vs uniform noise gives AUROC >= 0.9."""
    out = tmp_path / "scores"
    proc = run_script("score.py", f"ckpt_path={tiny_ckpt}", "ood_data=noise", f"out={out}",
                      f"hydra.run.dir={tmp_path / 'hydra'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert list(rows[0]) == ["index", "label", "bpd", "dataset", "ood"]
    test_rows = [r for r in rows if r["ood"] == "0"]
    noise_rows = [r for r in rows if r["ood"] == "1"]
    assert len(test_rows) == len(noise_rows) == 360  # digits' test split
    assert [int(r["index"]) for r in test_rows] == list(range(360))
    assert {r["dataset"] for r in test_rows} == {"digits"} and {r["dataset"] for r in noise_rows} == {"noise"}
    assert all(0 <= int(r["label"]) <= 9 for r in test_rows)
    mean_bpd = sum(float(r["bpd"]) for r in test_rows) / len(test_rows)

    eval_metrics = evaluate(compose_config("eval", [f"ckpt_path={tiny_ckpt}", "trainer=cpu",
                                                    "extras.print_config=false"], tmp_path / "eval"))
    assert mean_bpd == pytest.approx(eval_metrics["test/bpd"], abs=0.01)

    summary = read_json(out / "summary.json")
    assert summary["auroc_bpd"] >= 0.9, summary
    assert summary["test_bpd_mean"] < summary["ood_bpd_mean"]
    assert 0.0 <= summary["auroc_typicality"] <= 1.0 and summary["num_train"] > 1000
    assert (out / "histogram.png").stat().st_size > 1000


def test_same_dataset_as_ood_gives_chance_auroc(tiny_ckpt, tmp_path):
    """The model's own dataset named as the OOD set: identical scores, AUROC exactly 0.5."""
    s = score_checkpoint(tiny_ckpt, "digits", out=tmp_path, train_limit=64)
    assert s["num_ood"] == s["num_test"] == 360
    assert s["auroc_bpd"] == 0.5 and s["ood_bpd_mean"] == pytest.approx(s["test_bpd_mean"], abs=1e-9)


def test_ood_dataset_with_another_shape_names_both(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"\(1, 28, 28\).*\(1, 8, 8\).*ood.image_size=8"):
        score_checkpoint(tiny_ckpt, "fashion_mnist", out=tmp_path)


def test_ood_config_keeps_the_models_preprocessing(tiny_ckpt):
    cfg = ood_data_config(load_model(tiny_ckpt).data_config, "mnist_idx", {"shared_dir": "/somewhere"},
                          {"image_size": 8})
    assert (cfg.dataset, cfg.n_bits, cfg.image_size, cfg.idx_file) == ("mnist_idx", 5, 8, "t10k")
    assert cfg.root == "/somewhere/data/mnist"


def test_builtin_transforms():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 32, (5, 3, 4, 4), generator=g).to(torch.uint8)
    noise = transform_batch("noise", x, 5, g)
    assert noise.dtype == torch.uint8 and noise.shape == x.shape and int(noise.max()) <= 31
    assert len(noise.unique()) > 16  # spread over the 32 levels
    assert torch.equal(transform_batch("inverted", transform_batch("inverted", x, 5, g), 5, g), x)
    assert int((transform_batch("inverted", x, 5, g).long() + x.long()).unique()) == 31
    shuffled = transform_batch("shuffled_pixels", x, 5, g)
    assert not torch.equal(shuffled, x)
    for a, b in zip(x.flatten(2).transpose(1, 2), shuffled.flatten(2).transpose(1, 2)):
        # the same (channel vector) pixels, in another order
        assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))
    with pytest.raises(ValueError, match="noise"):
        transform_batch("blur", x, 5, g)
    assert set(TRANSFORMS) == {"noise", "inverted", "shuffled_pixels"}


def test_auroc_counts_ties_as_half():
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert auroc([1.0, 2.0], [2.0, 3.0]) == pytest.approx(0.875)
    assert auroc([1.0], [float("nan")]) == 1.0  # non-finite counts as most anomalous


def test_log_mean_exp_bpd():
    d = 64
    one = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(log_mean_exp_bpd(one, d), one[0].double())
    two = torch.tensor([[3.0], [3.0 + 1.0 / d]])  # probabilities P and P/2
    expected = 3.0 - math.log2(0.75) / d
    assert log_mean_exp_bpd(two, d).item() == pytest.approx(expected, abs=1e-9)


def test_k_draws_give_a_tighter_bound(tiny_ckpt):
    """k=4 draws: each image's bpd is at most the mean of its 4 single-draw bpds (Jensen), and
    draw 0 is eval's deterministic noise."""
    trained = load_model(tiny_ckpt)
    dm = trained.datamodule("test")
    k4, _ = image_bpd(trained, _batches(dm.test_dataset, 64, limit=64), k=4)
    seed = trained.eval_seed
    singles = []
    for j in range(4):
        trained.eval_seed = seed + j
        singles.append(image_bpd(trained, _batches(dm.test_dataset, 64, limit=64), k=1)[0])
    trained.eval_seed = seed
    singles = torch.stack(singles)
    assert (k4 <= singles.mean(0) + 1e-9).all()
    assert (k4 < singles.mean(0)).float().mean() > 0.9
    assert not torch.equal(singles[0], singles[1])


def test_variational_dequantisation_is_scored_with_its_q(tiny_ckpt, tmp_path, core_helpers):
    """A checkpoint trained with variational dequantisation (objective.dequantization) is scored
    with its learned q(u | x): k=1 is the bound eval.py reports (MaximumLikelihood.bpd_parts at
    eval_seed), not the uniform-noise bpd; k=16 is the importance-weighted bound, at most the mean
    of its single draws for every image (Jensen)."""
    from dataclasses import replace

    from glowlab.data.dequantization import build_dequantizer
    from glowlab.objectives import MaximumLikelihood

    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=False)
    config = {"kind": "variational", "hidden_channels": 4, "depth": 1}
    q = build_dequantizer(config, 1, ckpt["hyper_parameters"]["n_bits"])
    core_helpers.perturb_parameters(q, scale=0.3)  # away from the near-uniform init
    ckpt["hyper_parameters"]["objective"] = {"_target_": "glowlab.objectives.MaximumLikelihood",
                                             "dequantization": config}
    ckpt["state_dict"].update({f"objective.dequantizer.{k}": v for k, v in q.state_dict().items()})
    ckpt.pop("glowlab_state_dict_sha256", None)
    torch.save(ckpt, tmp_path / "vdq.ckpt")

    trained = load_model(tmp_path / "vdq.ckpt")
    assert trained.dequantizer is not None and not trained.dequantizer.training
    x_int, y = next(iter(_batches(trained.datamodule("test").test_dataset, 16, limit=16)))
    k1, _ = image_bpd(trained, [(x_int, y)], k=1)
    objective = MaximumLikelihood(dequantization=config)
    objective.setup(trained.model, trained.n_bits)
    objective.dequantizer.load_state_dict(q.state_dict())
    with torch.no_grad():
        expected = objective.bpd_parts(trained.model, (x_int, y), eval_seed=trained.eval_seed)[0]["bpd"]
    torch.testing.assert_close(k1, expected.double(), rtol=1e-6, atol=1e-6)
    uniform, _ = image_bpd(replace(trained, dequantizer=None), [(x_int, y)], k=1)
    assert (uniform - k1).abs().min() > 1e-3

    k16, _ = image_bpd(trained, [(x_int, y)], k=16)
    seed, singles = trained.eval_seed, []
    for j in range(16):
        singles.append(image_bpd(replace(trained, eval_seed=seed + j), [(x_int, y)], k=1)[0])
    assert torch.isfinite(k16).all() and (k16 <= torch.stack(singles).mean(0) + 1e-9).all()
    assert (k16 < k1).float().mean() > 0.5
