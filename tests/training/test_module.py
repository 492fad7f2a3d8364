"""FlowModule unit behaviour: non-finite steps, EMA, warm-up, atomic checkpoints."""

from __future__ import annotations

import fsspec.implementations.local as fs_local
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from glowlab.training import FlowModule
from glowlab.training.ema import EMA

TINY_GLOW = {"_target_": "glowlab.models.Glow", "image_shape": [1, 4, 4], "levels": 1, "depth": 2,
             "hidden_channels": 8}


def _loader(n=32, batch_size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 32, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    return DataLoader(TensorDataset(x, torch.zeros(n, dtype=torch.long)), batch_size=batch_size)


def _trainer(tmp_path, **kw):
    return pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, **kw)


class _PoisonOnce(pl.Callback):
    """Makes the loss of training batch ``at`` NaN, to exercise the non-finite handling."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.at:
            pl_module.model.top_prior.top.data[0] = float("nan")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.at:
            self.params_after = {k: v.clone() for k, v in pl_module.model.state_dict().items()}


class _Snapshot(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 2:
            self.before = {k: v.clone() for k, v in pl_module.model.state_dict().items()}


def test_nonfinite_step_is_skipped_and_parameters_untouched(tmp_path):
    """With nan_policy=skip, a batch with a NaN loss changes no parameter except the poisoned one,
    and training goes on with finite parameters afterwards."""
    module = FlowModule(TINY_GLOW, n_bits=5, warmup_steps=1, nan_policy="skip")
    poison, snap = _PoisonOnce(at=2), _Snapshot()
    _trainer(tmp_path, max_steps=3, callbacks=[snap, poison]).fit(module, _loader())
    for k, before in snap.before.items():
        after = poison.params_after[k]
        if k == "top_prior.top":
            assert torch.equal(after[1:], before[1:])
        else:
            assert torch.equal(after, before), f"{k} changed during a skipped step"
    assert module._nan_streak == 1


def test_nonfinite_step_stops_with_the_step_number(tmp_path):
    module = FlowModule(TINY_GLOW, n_bits=5, warmup_steps=1, nan_policy="stop")
    with pytest.raises(FloatingPointError, match="global step 2"):
        _trainer(tmp_path, max_steps=4, callbacks=[_PoisonOnce(at=2)]).fit(module, _loader())


def test_warmup_is_linear(tmp_path):
    module = FlowModule(TINY_GLOW, n_bits=5, lr=1e-3, warmup_steps=4)
    seen = []

    class Rec(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    _trainer(tmp_path, max_steps=6, callbacks=[Rec()]).fit(module, _loader(n=48))
    assert seen == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_ema_tracks_the_average_and_swaps_back():
    lin = torch.nn.Linear(2, 1)
    ema = EMA(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin)  # first update copies
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update(lin)  # 0.5 * 1 + 0.5 * 3
    with ema.swapped_in(lin):
        assert torch.allclose(lin.weight, torch.full_like(lin.weight, 2.0))
    assert torch.allclose(lin.weight, torch.full_like(lin.weight, 3.0))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A save that dies half-way through leaves the previous checkpoint intact and loadable."""
    module = FlowModule(TINY_GLOW, n_bits=5)
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(module, _loader())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    original = path.read_bytes()

    def broken_write(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(fs_local.LocalFileOpener, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    FlowModule.load_from_checkpoint(path)


@pytest.mark.parametrize("optimizer, impl, precision, expected", [
    ("adam", "auto", "32-true", "fused"),
    ("adam", "auto", "16-mixed", "foreach"),  # Lightning's fp16 scaler cannot drive the fused kernel
    ("adamax", "auto", "bf16-mixed", "foreach"),
    ("adamw", "forloop", "32-true", "forloop"),
])
def test_optimizer_kernel_follows_config_and_precision(optimizer, impl, precision, expected):
    from types import SimpleNamespace

    module = FlowModule(TINY_GLOW, n_bits=5, optimizer=optimizer, optimizer_impl=impl)
    module._trainer = SimpleNamespace(precision=precision)
    opt = module.configure_optimizers()["optimizer"]
    kernel = "fused" if opt.defaults.get("fused") else "foreach" if opt.defaults.get("foreach") else "forloop"
    assert kernel == expected


def test_bad_optimizer_impl_names_the_key():
    with pytest.raises(ValueError, match="module.optimizer_impl"):
        FlowModule(TINY_GLOW, n_bits=5, optimizer_impl="turbo")
    with pytest.raises(ValueError, match="foreach"):
        FlowModule(TINY_GLOW, n_bits=5, optimizer="adamax", optimizer_impl="fused")


# -- objectives ---------------------------------------------------------------------------------

def _changed(module, before):
    return any(not torch.equal(v, before[k]) for k, v in module.model.state_dict().items())


def _fit(module, tmp_path, train, val=None, steps=3):
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = _trainer(tmp_path, max_steps=steps, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(module, train, val)
    assert _changed(module, before), "three training steps changed no parameter"
    return trainer


def test_class_conditional_maximum_likelihood_logs_the_classifier_accuracy(tmp_path):
    """weight_y > 0: three steps train the flow and its classifier; val/accuracy is logged next to val/bpd."""
    config = {**TINY_GLOW, "num_classes": 3}
    module = FlowModule(config, n_bits=5, warmup_steps=1, objective={"_target_": "glowlab.objectives.MaximumLikelihood",
                                                                     "weight_y": 1.0})
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 32, (24, 1, 4, 4), generator=g, dtype=torch.uint8)
    data = DataLoader(TensorDataset(x, torch.arange(24) % 3), batch_size=8)
    classifier = module.model.classifier.weight.detach().clone()
    trainer = _fit(module, tmp_path, data, data)
    assert not torch.equal(module.model.classifier.weight, classifier)
    metrics = trainer.callback_metrics
    assert 0 <= float(metrics["val/accuracy"]) <= 1 and "val/bpd" in metrics and "train/bits_y" in metrics
    trainer.test(module, data)
    assert "test/accuracy" in trainer.callback_metrics


class _LearnableLookingEnergy(torch.nn.Module):
    """A Gaussian energy whose centre is an nn.Parameter: the reverse-KL target must not train it."""

    def __init__(self):
        super().__init__()
        self.centre = torch.nn.Parameter(torch.tensor([1.0, -1.0]))

    def forward(self, z):
        return 0.5 * (z - self.centre).square().sum(1)


def test_a_reverse_kl_target_with_parameters_stays_fixed(tmp_path):
    target = _LearnableLookingEnergy()
    objective = {"_target_": "glowlab.objectives.ReverseKL", "target": target, "samples": 16, "eval_samples": 64,
                 "steps_per_epoch": 3}
    module = FlowModule({"_target_": "glowlab.vi.VariationalFlow", "features": 2, "flow": "planar", "length": 2},
                        n_bits=None, warmup_steps=1, objective=objective)
    centre = module.objective.target.centre
    assert all(p is not centre for p in module.trained_parameters())
    dm = module.objective.datamodule()
    _fit(module, tmp_path, dm.train_dataloader(), dm.val_dataloader())
    assert torch.equal(module.objective.target.centre.detach(), torch.tensor([1.0, -1.0]))


def test_reverse_kl_trains_a_variational_flow_without_data(tmp_path):
    objective = {"_target_": "glowlab.objectives.ReverseKL", "target": {"_target_": "glowlab.vi.energy", "name": "u1"},
                 "samples": 16, "eval_samples": 64, "steps_per_epoch": 3}
    module = FlowModule({"_target_": "glowlab.vi.VariationalFlow", "features": 2, "flow": "planar", "length": 2},
                        n_bits=None, warmup_steps=1, objective=objective)
    dm = module.objective.datamodule()
    trainer = _fit(module, tmp_path, dm.train_dataloader(), dm.val_dataloader())
    metrics = trainer.callback_metrics
    assert float(metrics["val/kl_estimate"]) > 0 and "train/free_energy" in metrics and "train/beta" in metrics
    with pytest.raises(ValueError, match="sample_images"):
        module.sample_images(2)


def test_elbo_trains_a_flow_vae(tmp_path):
    config = {"_target_": "glowlab.models.vae.FlowVAE", "image_shape": [1, 4, 4], "latent_features": 2,
              "hidden_features": 8, "posterior": "planar", "length": 2, "n_bits": 5}
    module = FlowModule(config, n_bits=5, warmup_steps=1, objective={"_target_": "glowlab.objectives.ELBO"})
    trainer = _fit(module, tmp_path, _loader(n=24), _loader(n=8))
    assert float(trainer.callback_metrics["val/neg_elbo"]) > 0 and "val/bpd_bound" in trainer.callback_metrics


def test_cnf_regularisation_and_nfe_are_logged(tmp_path):
    """A continuous flow's RNODE terms join the loss and its NFE are logged; nats on vector data."""
    config = {"_target_": "glowlab.models.VectorFFJORD", "event_shape": [2], "hidden_features": [8],
              "method": "rk4", "step_size": 0.5, "kinetic_weight": 0.1, "jacobian_weight": 0.1}
    module = FlowModule(config, n_bits=None, warmup_steps=1)
    data = DataLoader(TensorDataset(torch.randn(24, 2)), batch_size=8)
    trainer = _fit(module, tmp_path, data, data)
    metrics = trainer.callback_metrics
    assert float(metrics["train/reg_loss"]) > 0 and float(metrics["train/nfe_forward"]) > 0
    assert float(metrics["val/nfe_forward"]) > 0 and "val/nll" in metrics


@pytest.mark.parametrize("name", ["glow_class_conditional", "realnvp"])
def test_checkpoint_of_glowlab_0_1_loads_with_its_density(name, tmp_path):
    """A glowlab 0.1 checkpoint loads into a FlowModule with the density it was trained as
    (glowlab.models.compat): a class-conditional Glow without conditional couplings, a RealNVP
    without a translation bound. A new module stores translation_bound explicitly."""
    from pathlib import Path

    case = torch.load(Path(__file__).parents[1] / "models" / "data" / "glowlab_0_1_state_dicts.pt",
                      weights_only=False)[name]
    config = {"_target_": case["target"], **case["kwargs"]}
    module = FlowModule(config, n_bits=5)
    assert module.hparams.model_config.get("translation_bound", "unset") == (5.0 if name == "realnvp" else "unset")
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in case["state_dict"].items()},
                  "hyper_parameters": {"model_config": config}}
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    if name == "realnvp":
        assert module.hparams.model_config["translation_bound"] is None
        assert module.model.config["translation_bound"] is None
    else:
        assert module.hparams.model_config["condition_couplings"] is False and not module.model.condition_couplings
    module.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(module.model.log_prob(case["x"], case["y"]), case["log_prob"], rtol=1e-6, atol=1e-5)


def test_sample_images_is_reproducible_for_a_density_without_a_generator_argument():
    module = FlowModule({"_target_": "glowlab.models.MAF", "image_shape": [1, 2, 2], "layers": 1,
                         "hidden_features": 8}, n_bits=5)
    a = module.sample_images(3, generator=torch.Generator().manual_seed(1))
    b = module.sample_images(3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 1, 2, 2) and torch.equal(a, b)


def test_stochastic_log_prob_is_averaged_in_evaluation_with_its_standard_error(tmp_path):
    """An FFJORD evaluated with the Hutchinson trace logs val/bpd (mean of eval_probes estimates
    per image) and a positive val/bpd_stderr."""
    config = {"_target_": "glowlab.models.FFJORD", "image_shape": [1, 4, 4], "levels": 1, "hidden_channels": [4],
              "method": "rk4", "step_size": 0.5, "eval_trace": "hutchinson"}
    module = FlowModule(config, n_bits=5, warmup_steps=1,
                        objective={"_target_": "glowlab.objectives.MaximumLikelihood", "eval_probes": 3})
    trainer = _fit(module, tmp_path, _loader(n=16), _loader(n=8), steps=2)
    assert float(trainer.callback_metrics["val/bpd_stderr"]) > 0 and "val/bpd" in trainer.callback_metrics


def test_a_learned_dequantiser_is_trained_with_the_model(tmp_path):
    objective = {"_target_": "glowlab.objectives.MaximumLikelihood",
                 "dequantization": {"kind": "variational", "hidden_channels": 4, "depth": 1}}
    module = FlowModule(TINY_GLOW, n_bits=5, warmup_steps=1, objective=objective)
    before = {k: v.clone() for k, v in module.objective.state_dict().items()}
    trainer = _fit(module, tmp_path, _loader(n=24), _loader(n=8))
    assert any(not torch.equal(v, before[k]) for k, v in module.objective.state_dict().items())
    assert "val/dequant_bpd" in trainer.callback_metrics


def test_evaluation_mean_keeps_non_finite_images():
    """One NaN image makes the split's mean NaN: a finite-looking bpd must not hide it."""
    from glowlab.training.module import exact_mean

    metric = exact_mean()
    metric.update(torch.tensor([2.0, float("nan"), 3.0], dtype=torch.float64))
    assert torch.isnan(metric.compute())
    finite = exact_mean()
    finite.update(torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert float(finite.compute()) == 3.0
