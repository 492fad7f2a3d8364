"""End to end under Lightning DDP (2 CPU processes): evaluation metrics are exact dataset means.

Validation and test sets are sized so the two ranks get different numbers of images *and* of
batches, which is where padded samplers would double count and uneven ones could hang.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric

from glowlab.data import FlowDataModule


class LabelStats(pl.LightningModule):
    """Logs the count, sum and mean of the labels of each evaluation set.

    The mean goes through a torchmetrics ``MeanMetric`` (float sum and weight states, summed over
    ranks), the exact way to log a per-image mean such as bpd. Lightning's own ``self.log(mean,
    batch_size=b, sync_dist=True)`` is not exact here: with the gloo backend it averages the
    integer batch-size total over ranks with an integer division (73 / 2 -> 36).
    """

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.means = torch.nn.ModuleDict({p: MeanMetric().set_dtype(torch.float64) for p in ("val", "test")})

    def training_step(self, batch, batch_idx):
        x, _ = batch
        return (self.w - x.float().mean()) ** 2

    def _eval(self, batch, prefix):
        x, y = batch
        b = len(y)
        self.log(f"{prefix}/count", float(b), reduce_fx="sum", sync_dist=True, batch_size=b)
        self.log(f"{prefix}/label_sum", y.double().sum(), reduce_fx="sum", sync_dist=True, batch_size=b)
        self.means[prefix].update(y.double())
        self.log(f"{prefix}/label_mean", self.means[prefix], batch_size=b)

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_ddp_validation_counts_each_image_once(tmp_path):
    # 73 validation images -> 37 / 36 per rank -> 5 / 4 batches of 9. One fit (about 20 s, mostly
    # the two processes importing Lightning); test loaders take the same code path as val.
    # use_distributed_sampler=True, as in conf/trainer/ddp*.yaml: Lightning must keep our samplers.
    dm = FlowDataModule("digits", root="x", n_bits=5, val_size=73, batch_size=32, eval_batch_size=9)
    dm.setup("fit")
    val_y = dm.val_dataset.base.labels[dm.val_dataset.indices].double()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1,
                         limit_train_batches=2, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=True, default_root_dir=tmp_path)
    trainer.fit(LabelStats(), datamodule=dm)
    val = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert val["val/count"] == 73
    assert val["val/label_sum"] == float(val_y.sum())
    assert val["val/label_mean"] == pytest.approx(float(val_y.mean()), abs=1e-12)
