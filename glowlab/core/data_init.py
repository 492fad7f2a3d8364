"""Data-dependent initialisation as a declared hook, so execution strategies need not know layer types.

A layer whose parameters are set from the first batch it sees (ActNorm: Kingma & Dhariwal, 2018)
subclasses :class:`DataDependentInit`. It reports :meth:`~DataDependentInit.needs_data_init` and
initialises itself in :meth:`~DataDependentInit.data_init`; its own training-mode ``forward`` calls
the hook on the first batch. Code that runs models in special ways (reversible backpropagation,
compilation) asks :func:`needs_data_init` whether any layer of a module still waits for its batch,
and then runs one plain training-mode pass first.

Example:
    >>> import torch
    >>> from glowlab.layers import ActNorm
    >>> norm = ActNorm(3)
    >>> needs_data_init(norm), isinstance(norm, DataDependentInit)
    (True, True)
    >>> _ = norm(torch.randn(8, 3))  # the first training-mode batch initialises it
    >>> needs_data_init(norm)
    False
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DataDependentInit", "needs_data_init"]


class DataDependentInit:
    """Mixin for layers initialised from data. Subclasses implement both methods.

    * ``needs_data_init() -> bool``: True until the layer has been initialised (a host-side check,
      no device synchronisation once answered False);
    * ``data_init(x, context=None)``: set the parameters from the batch ``x`` (the layer's input),
      without building a graph.
    """

    def needs_data_init(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def data_init(self, x: torch.Tensor, context=None) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def needs_data_init(module: nn.Module) -> bool:
    """True while any :class:`DataDependentInit` layer inside ``module`` (itself included) still
    waits for its initialising batch."""
    return any(isinstance(m, DataDependentInit) and m.needs_data_init() for m in module.modules())
