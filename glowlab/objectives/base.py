"""The objective contract: what a training step minimises, apart from the LightningModule.

An :class:`Objective` turns ``(model, batch)`` into ``(loss, metrics)``:

* ``loss``: a scalar to minimise;
* ``metrics``: ``{name: tensor}``, each either per sample ``[B]`` (averaged exactly over a whole
  evaluation split) or a scalar. The training loop logs them as ``{train,val,test}/{name}``.

An objective that needs no dataset (reverse KL to an energy) says so with ``needs_data = False`` and
builds its own :class:`~glowlab.training.steps_data.StepsDataModule`-style data module; what an
objective monitors for checkpoints and sweeps is ``monitor`` (e.g. ``"val/bpd"``).

Example:
    >>> import torch
    >>> from glowlab.core import FlowDensity, Compose, StandardNormal
    >>> class NLL(Objective):
    ...     def loss(self, model, batch, step=0, eval_seed=None, encode=None):
    ...         nll = -model.log_prob(batch[0])
    ...         return nll.mean(), {"nll": nll.detach()}
    >>> loss, metrics = NLL().loss(FlowDensity(StandardNormal((2,)), Compose([])), (torch.zeros(3, 2),))
    >>> round(float(loss), 4), tuple(metrics["nll"].shape)
    (1.8379, (3,))
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["Objective", "batch_context"]


def batch_context(model: nn.Module, batch) -> torch.Tensor | None:
    """The context a data batch ``(x, y, ...)`` gives ``model``: the labels ``y`` when the model is
    class-conditional (``model.context_kind == "label"``), else None."""
    if model.context_kind == "label":
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"{type(model).__name__} is class-conditional (num_classes={model.num_classes}) but "
                             f"the batches carry no labels; use a data module that yields (images, labels)")
        return batch[1]
    return None


class Objective(nn.Module):
    """Base of the objectives (see the module docstring). An ``nn.Module`` so that an objective with
    parameters or buffers is saved with the training module (none of the built-in ones has any)."""

    #: whether training needs a dataset; False: an epoch is a number of steps of a dummy batch
    needs_data: ClassVar[bool] = True
    #: the metric checkpoints and sweeps minimise
    monitor: ClassVar[str] = "val/loss"

    def setup(self, model: nn.Module, n_bits: int | None = None) -> None:
        """Called once by the training module with the model and the data's bits per pixel (None
        for data that is not quantised images). Default: nothing."""

    def loss(self, model: nn.Module, batch, step: int = 0, eval_seed: int | None = None,
             encode=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        """``(loss, metrics)`` for one batch. ``step`` is the global optimiser step (annealing);
        ``eval_seed`` is set in evaluation (deterministic noise); ``encode`` replaces
        ``model.encode`` (e.g. a compiled version) where the objective uses it."""
        raise NotImplementedError

    def datamodule(self):
        """The data module of a run without data (None: the run's own data module)."""
        return
