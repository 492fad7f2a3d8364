"""Lightning and Hydra glue: the LightningModule, callbacks and the train/eval/sample entry points."""

from glowlab.training.module import FlowModule

__all__ = ["FlowModule"]
