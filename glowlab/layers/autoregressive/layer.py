"""Masked autoregressive layers: MAF's direction (:class:`MaskedAutoregressive`) and IAF's
(:class:`InverseAutoregressive`), under the bijection contract.

In the order of its network, element ``i`` is transformed by a monotone map whose parameters
depend only on the elements before it:

    y_i = τ(x_i; θ_i(x_{<i}, context)),        log|det ∂y/∂x| = Σ_i log τ'(x_i; θ_i).

The Jacobian is triangular in that order, so the ladj is the sum of the diagonal.

* **forward** (``x -> y``, MAF's density direction): one network pass, all ``θ_i`` at once.
* **inverse** (``y -> x``, MAF's sampling direction): ``x_i`` needs ``x_{<i}``; starting from
  ``x = 0``, each pass ``x <- τ⁻¹(y; θ(x))`` makes one more element exact, so ``D`` passes give the
  exact inverse (vectors: ``D`` features; images: pixel by pixel and channel by channel, ``C·H·W``
  passes, e.g. 784 for a 1x28x28 image, each pass on only the rows the current one can see).
  Hence ``inverse_kind = "sequential"``: reversible memory saving refuses the layer. Sampling that
  lasts more than a few seconds shows a progress bar.

:class:`InverseAutoregressive` swaps the two directions (IAF): its forward is the sequential one,
its inverse one pass, so a density using it as its data-to-latent map samples in one pass.

References:
    Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling, "Improved Variational Inference with
    Inverse Autoregressive Flow", NeurIPS 2016.

Example:
    >>> import torch
    >>> f = MaskedAutoregressive((3,), hidden_features=8)
    >>> x = torch.randn(5, 3)
    >>> y, ladj = f(x)
    >>> x2, ladj_inv = f.inverse(y)
    >>> bool(torch.allclose(x, x2, atol=1e-6)), bool(torch.allclose(ladj, -ladj_inv))
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from glowlab.core import Bijection, Inverse, logdet_dtype
from glowlab.layers.autoregressive.made import MADE
from glowlab.layers.autoregressive.masked_conv import MaskedConvNet, raster_order
from glowlab.layers.autoregressive.transformers import make_transformer

__all__ = ["PROGRESS_DELAY_S", "InverseAutoregressive", "MaskedAutoregressive"]

#: A sequential inverse shows a progress bar (tqdm, on stderr when it is a terminal) once it has run this many
#: seconds.
PROGRESS_DELAY_S = 3.0


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass


def _progress(total: int, desc: str):
    """A tqdm bar on stderr that appears after :data:`PROGRESS_DELAY_S` seconds, only when stderr is
    a terminal (none in logs), or nothing when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return _NoProgress()
    return tqdm(total=total, desc=desc, unit="pass", leave=False, delay=PROGRESS_DELAY_S, disable=None)


class MaskedAutoregressive(Bijection):
    """A MAF layer over vectors ``[B, D]`` (a :class:`MADE`) or images ``[B, C, H, W]`` (a
    :class:`MaskedConvNet`); ``ladj`` is ``[B]`` nats per sample.

    Args:
        event_shape: ``(D,)`` or ``(C, H, W)``.
        hidden_features: MADE hidden widths (an int repeated ``hidden_layers`` times, or a list);
            for images, the hidden channels of the masked convolutions.
        hidden_layers: number of hidden layers when ``hidden_features`` is an int.
        transformer: ``"affine"`` (``max_log_scale``) or ``"spline"`` (``bins``, ``bound``).
        order: vectors: ``"identity"``, ``"reversed"`` or ``"random"`` (with ``seed``, kept in the
            state dict); images: ``"identity"`` (raster, then channels) or ``"reversed"``.
        context_features: width of a tensor context ``[B, F]`` (0: unconditional).
        kernel_size: images only, the masked convolutions' kernel.
        activation: hidden activation name.
    """

    inverse_kind = "sequential"

    def __init__(self, event_shape: Sequence[int], hidden_features: int | Sequence[int] = 64, hidden_layers: int = 2,
                 transformer: str = "affine", order: str = "identity", seed: int | None = None,
                 context_features: int = 0, kernel_size: int = 3, activation: str = "relu", bins: int = 8,
                 bound: float = 3.0, max_log_scale: float = 3.0):
        super().__init__()
        shape = tuple(int(s) for s in event_shape)
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise ValueError(f"event_shape must be (D,) for vectors or (C, H, W) for images, got {event_shape!r}")
        self.event_shape = shape
        self.event_dim = len(shape)
        self.transformer = make_transformer(transformer, bins, bound, max_log_scale)
        p = self.transformer.params_per_element
        if len(shape) == 1:
            hidden = [int(hidden_features)] * hidden_layers if isinstance(hidden_features, int) else hidden_features
            self.net = MADE(shape[0], hidden, p, order, seed, context_features, activation)
        else:
            if order not in ("identity", "reversed"):
                raise ValueError(f"images are ordered by raster then channel: order must be 'identity' or "
                                 f"'reversed', got {order!r}")
            if not isinstance(hidden_features, int):
                raise ValueError(f"for images hidden_features is the number of hidden channels (an int), got "
                                 f"{hidden_features!r}")
            self.net = MaskedConvNet(shape[0], hidden_features, hidden_layers, p, kernel_size,
                                     order == "reversed", context_features, activation)

    @property
    def num_passes(self) -> int:
        """Network passes of the sequential direction: one per element, ``D`` or ``C·H·W``."""
        return math.prod(self.event_shape)

    def order(self) -> torch.Tensor:
        """The rank of each element, shaped like one event (``[D]`` or ``[C, H, W]``)."""
        if self.event_dim == 1:
            return self.net.order
        return raster_order(self.event_shape, self.net.reverse)

    def _check(self, x: torch.Tensor, what: str) -> None:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"{type(self).__name__} was built for events of shape {self.event_shape}; its {what} "
                             f"has shape {tuple(x.shape)} (expected [B, {', '.join(map(str, self.event_shape))}])")

    def _ladj(self, logd: torch.Tensor) -> torch.Tensor:
        return logd.flatten(1).sum(1, dtype=logdet_dtype(logd))

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "input")
        y, logd = self.transformer(x, self.net(x, context))
        return y, self._ladj(logd)

    def inverse(self, y: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, "input to the inverse")
        with _progress(self.num_passes, f"{type(self).__name__} inverse") as steps:
            if self.event_dim == 3:
                return self._inverse_rows(y, context, steps)
            x = torch.zeros_like(y)
            logd = None
            for _ in range(self.num_passes):
                x, logd = self.transformer.inverse(y, self.net(x, context))
                steps.update()
        return x, self._ladj(logd)

    def _inverse_rows(self, y: torch.Tensor, context, steps) -> tuple[torch.Tensor, torch.Tensor]:
        """Images: row by row in the order, ``C·W`` passes per row (one per element), each on the
        rows the current one can see (:meth:`MaskedConvNet.row_params`)."""
        c, height, width = self.event_shape
        rows = list(torch.zeros_like(y).unbind(2))  # [B, C, W] each
        ladj = torch.zeros(y.shape[0], dtype=logdet_dtype(y), device=y.device)
        for r in (reversed(range(height)) if self.net.reverse else range(height)):
            for _ in range(c * width):
                params = self.net.row_params(torch.stack(rows, dim=2), r, context)
                rows[r], logd = self.transformer.inverse(y[:, :, r], params)
                steps.update()
            ladj = ladj + self._ladj(logd)  # row r is exact now, and so are its parameters
        return torch.stack(rows, dim=2), ladj


class InverseAutoregressive(Inverse):
    """An IAF layer: the inverse of a :class:`MaskedAutoregressive` built with the same arguments.

    ``inverse`` (latent to data, sampling) is one network pass, ``x_i = τ(z_i; θ_i(z_{<i}))``;
    ``forward`` (data to latent, density of an arbitrary point) is sequential, ``D`` passes. Its
    ``inverse_kind`` is ``"analytic"`` (what reversible memory saving needs is the one-pass
    inverse); the sequential cost is in the forward direction.

    Example:
        >>> import torch
        >>> f = InverseAutoregressive((3,), hidden_features=8)
        >>> z = torch.randn(5, 3)
        >>> x, ladj_inv = f.inverse(z)  # one pass
        >>> z2, ladj = f(x)  # D passes
        >>> bool(torch.allclose(z, z2, atol=1e-6)), bool(torch.allclose(ladj, -ladj_inv))
        (True, True)
    """

    def __init__(self, event_shape: Sequence[int], **kwargs):
        super().__init__(MaskedAutoregressive(event_shape, **kwargs))

    @property
    def num_passes(self) -> int:
        return self.bijection.num_passes

    def order(self) -> torch.Tensor:
        return self.bijection.order()
