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
