"""The bijection contract: invertible maps that return their log-determinant in both directions.

A :class:`Bijection` maps ``x`` to ``y`` and reports ``ladj = log|det ∂y/∂x|`` per sample:

* ``forward(x, context=None) -> (y, ladj)``
* ``inverse(y, context=None) -> (x, ladj)``, where ``ladj = log|det ∂x/∂y|``, which at ``y =
  forward(x)`` equals minus the forward's ladj.

``ladj`` has shape ``[B]`` (one value per sample, in nats) and is accumulated in float32 or wider,
also under autocast (:func:`logdet_dtype`). ``context`` is what the map is conditioned on (a class
label ``[B]`` or a tensor such as an encoder's output); layers that are not conditional ignore it.

Each layer declares

* ``event_dim``: how many trailing dimensions form one sample: 1 for vectors ``[B, D]``, 3 for
  images ``[B, C, H, W]``, ``None`` for elementwise layers that take any shape;
* ``inverse_kind``: how its inverse is computed (see :data:`INVERSE_KINDS`). Execution strategies
  such as reversible backpropagation read :attr:`Bijection.inverse_is_cheap` and refuse layers
  whose inverse is not an exact closed form.

Example:
    >>> import math, torch
    >>> class Scale(Bijection):
    ...     event_dim = None
    ...     def forward(self, x, context=None):
    ...         return 2 * x, torch.full((x.shape[0],), x[0].numel() * math.log(2.0))
    ...     def inverse(self, y, context=None):
    ...         return y / 2, torch.full((y.shape[0],), -y[0].numel() * math.log(2.0))
    >>> f = Compose([Scale(), Scale()])
    >>> y, ladj = f(torch.ones(2, 3))
    >>> x, ladj_inv = f.inverse(y)
    >>> bool(torch.allclose(x, torch.ones(2, 3))), bool(torch.allclose(ladj, -ladj_inv))
    (True, True)
"""

from __future__ import annotations

from typing import ClassVar, Iterable

import torch
from torch import nn

from glowlab.core.errors import InverseNotAvailable

__all__ = ["Bijection", "Compose", "Inverse", "logdet_dtype", "zero_ladj", "INVERSE_KINDS",
           "check_event"]

#: How a bijection's inverse is computed, from cheapest to none:
#: ``"analytic"`` a closed form in one pass, exact up to rounding (couplings, 1x1 convolutions);
#: ``"sequential"`` exact up to rounding but several passes, e.g. D for MAF;
#: ``"numerical"`` a root-finder or an ODE solve, exact only to a stated tolerance;
#: ``"none"`` no inverse: :meth:`Bijection.inverse` raises :class:`InverseNotAvailable`.
INVERSE_KINDS = ("analytic", "sequential", "numerical", "none")


def logdet_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype log-determinants accumulate in: float32 or wider, whatever ``x`` is (bf16/fp16
    under autocast included)."""
    return torch.promote_types(x.dtype, torch.float32)


def zero_ladj(x: torch.Tensor) -> torch.Tensor:
    """A ``[B]`` zero log-determinant for a volume-preserving map of ``x``."""
    return x.new_zeros(x.shape[0], dtype=logdet_dtype(x))


def check_event(layer: nn.Module, x: torch.Tensor, event_dim: int, what: str = "input") -> None:
    """Raise a ``ValueError`` naming ``layer`` and the shape unless ``x`` is ``[B, *event]`` with an
    event of ``event_dim`` dimensions."""
    if x.dim() != event_dim + 1:
        layout = {1: "[B, D]", 3: "[B, C, H, W]"}.get(event_dim, f"[B] + {event_dim} event dims")
        raise ValueError(f"{type(layer).__name__} expects its {what} as {layout}, got a tensor of "
                         f"shape {tuple(x.shape)}")


class Bijection(nn.Module):
    """Base class of every invertible layer (see the module docstring for the contract).

    Subclasses implement :meth:`forward` and, unless ``inverse_kind == "none"``, :meth:`inverse`.
    """

    event_dim: ClassVar[int | None] = None
    inverse_kind: ClassVar[str] = "analytic"

    @property
    def inverse_is_cheap(self) -> bool:
        """True when the inverse is a closed form, exact up to rounding, at about the cost of the
        forward pass: what reversible backpropagation needs."""
        return self.inverse_kind == "analytic"

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        raise InverseNotAvailable(
            f"{type(self).__name__} has no inverse (inverse_kind={self.inverse_kind!r}); sample "
            f"through it in the forward direction instead, or use a layer with an inverse"
        )


def _worst_inverse_kind(kinds: Iterable[str]) -> str:
    return max(kinds, key=INVERSE_KINDS.index, default="analytic")


class Compose(Bijection):
    """Bijections applied in order; the ladj is the sum of the parts' ladj (``[B]`` nats).

    Its ``inverse_kind`` is that of its most expensive part, and its ``event_dim`` the largest of
    its parts'.
    """

    def __init__(self, bijections: Iterable[nn.Module]):
        super().__init__()
        self.flows = nn.ModuleList(bijections)

    @property
    def inverse_kind(self) -> str:  # type: ignore[override]
        return _worst_inverse_kind(getattr(f, "inverse_kind", "analytic") for f in self.flows)

    @property
    def event_dim(self) -> int | None:  # type: ignore[override]
        dims = [f.event_dim for f in self.flows if getattr(f, "event_dim", None) is not None]
        return max(dims) if dims else None

    def __len__(self) -> int:
        return len(self.flows)

    def __iter__(self):
        return iter(self.flows)

    def __getitem__(self, i):
        return self.flows[i]

    def forward(self, x: torch.Tensor, context=None):
        ladj = zero_ladj(x)
        for flow in self.flows:
            x, part = flow(x, context)
            ladj = ladj + part
        return x, ladj

    def inverse(self, y: torch.Tensor, context=None):
        ladj = zero_ladj(y)
        for flow in reversed(self.flows):
            y, part = flow.inverse(y, context)
            ladj = ladj + part
        return y, ladj


class Inverse(Bijection):
    """The inverse of a bijection: ``Inverse(f).forward`` is ``f.inverse`` and vice versa.

    Useful to put a layer's cheap direction where a model needs it, e.g. an IAF is the inverse of a
    MAF, and a planar flow (forward only) becomes a sampler when wrapped this way in a density
    whose transform maps data to latent.
    """

    def __init__(self, bijection: Bijection):
        super().__init__()
        self.bijection = bijection

    @property
    def event_dim(self) -> int | None:  # type: ignore[override]
        return self.bijection.event_dim

    @property
    def inverse_kind(self) -> str:  # type: ignore[override]
        # the inverse of the inverse is the wrapped layer's forward pass: always a closed form
        return "analytic"

    def forward(self, x: torch.Tensor, context=None):
        return self.bijection.inverse(x, context)

    def inverse(self, y: torch.Tensor, context=None):
        return self.bijection(y, context)

