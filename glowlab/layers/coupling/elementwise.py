"""Couplings whose transformer is an elementwise monotonic map: the shared machinery.

A coupling keeps part ``a`` of its input, feeds it (with an optional conditioning input) to a
network, and maps every element of part ``b`` by a monotonic scalar function whose ``P``
parameters the network outputs: ``y_b = τ(x_b; NN(x_a)), y_a = x_a``. The Jacobian is triangular,
so ``ladj = Σ_b log τ'(x_b)`` (``[B]``, nats). :class:`~glowlab.layers.coupling.SplineCoupling`
and :class:`~glowlab.layers.coupling.MixtureCoupling` fill in ``τ``.

Layouts:

* images ``[B, C, H, W]`` (``event_dim=3``): ``mask="channel"`` keeps ``C // 2`` channels
  (``parity=1`` keeps the other half), ``mask="checkerboard"`` keeps the pixels with
  ``(i + j) % 2 == parity`` in every channel. Networks ``"glow"``, ``"resnet"`` and ``"flowpp"``, as in
  :class:`~glowlab.layers.coupling.AffineCoupling`.
* vectors ``[B, D]`` (``event_dim=1``): the halves of ``D``, network ``"mlp"``.

The networks' last layer is zero-initialised; the subclasses map all-zero parameters to the
identity, so a fresh coupling is the identity map.

References:
    Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017 (masks).
"""

from __future__ import annotations

import torch
from torch import nn

from glowlab.core.bijection import Bijection, logdet_dtype
from glowlab.core.errors import ContextError
from glowlab.layers.coupling.affine import broadcast_cond, checkerboard_mask
from glowlab.layers.coupling.flowpp_net import FlowppCouplingNet
from glowlab.layers.coupling.masks import join_channels, split_channels
from glowlab.layers.coupling.nets import MLP, CouplingNet, ResNetCouplingNet

__all__ = ["ElementwiseCoupling"]

_IMAGE_NETS = ("glow", "resnet", "flowpp")
_MASKS = ("channel", "checkerboard")


class ElementwiseCoupling(Bijection):
    """Base class: subclasses set ``params_per_dim`` and implement :meth:`_transform`.

    Args:
        in_channels: C of images ``[B, C, H, W]``, or D of vectors ``[B, D]``.
        hidden_channels: width of the network (channels, or units of the MLP).
        mask: ``"channel"`` or ``"checkerboard"`` (images only).
        parity: 0 or 1, which part is kept.
        net: ``"glow"``, ``"resnet"`` or ``"flowpp"`` for images, ``"mlp"`` for vectors.
        num_blocks: residual blocks (``"resnet"``), Flow++ blocks (``"flowpp"``) or hidden layers (``"mlp"``).
        actnorm: ActNorm inside the convolutional networks.
        cond_channels: K of an optional conditioning ``context``: ``[B, K]``, or ``[B, K, h, w]`` for
            images (pooled or upsampled to ``H x W``), concatenated to the network's input.
        event_dim: 3 for images, 1 for vectors.
    """

    params_per_dim: int = 0

    def __init__(self, in_channels: int, hidden_channels: int = 512, mask: str = "channel", parity: int = 0,
                 net: str | None = None, num_blocks: int = 2, actnorm: bool = True, cond_channels: int = 0,
                 event_dim: int = 3):
        super().__init__()
        if event_dim not in (1, 3):
            raise ValueError(f"event_dim must be 3 (images [B, C, H, W]) or 1 (vectors [B, D]), got {event_dim!r}")
        net = net or ("glow" if event_dim == 3 else "mlp")
        nets = _IMAGE_NETS if event_dim == 3 else ("mlp",)
        if net not in nets:
            raise ValueError(f"net must be one of {nets} for event_dim={event_dim}, got {net!r}")
        masks = _MASKS if event_dim == 3 else ("channel",)
        if mask not in masks:
            raise ValueError(f"mask must be one of {masks} for event_dim={event_dim}, got {mask!r}")
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}")
        if mask == "channel" and in_channels < 2:
            raise ValueError(f"a channel-mask coupling needs at least 2 channels (features) to split, got "
                             f"in_channels={in_channels}; squeeze the input first or use mask='checkerboard'")
        if cond_channels < 0 or hidden_channels < 1:
            raise ValueError(f"cond_channels must be >= 0 and hidden_channels >= 1, got {cond_channels}, "
                             f"{hidden_channels}")
        self.event_dim = event_dim  # type: ignore[misc]  # per instance: images or vectors
        self.in_channels, self.mask, self.parity, self.cond_channels = in_channels, mask, parity, cond_channels
        if mask == "channel":
            self.n_kept = in_channels // 2 if parity == 0 else in_channels - in_channels // 2
            self.n_changed = in_channels - self.n_kept
        else:
            self.n_kept = self.n_changed = in_channels
        net_in, net_out = self.n_kept + cond_channels, self.n_changed * self.params_per_dim
        if net == "glow":
            self.net: nn.Module = CouplingNet(net_in, net_out, hidden_channels, actnorm=actnorm)
        elif net == "resnet":
            self.net = ResNetCouplingNet(net_in, net_out, hidden_channels, num_blocks, actnorm=actnorm)
        elif net == "flowpp":
            self.net = FlowppCouplingNet(net_in, net_out, hidden_channels, num_blocks)
        else:
            self.net = MLP(net_in, net_out, hidden_channels, num_blocks)

    # -- subclasses ------------------------------------------------------------------------------
    def _transform(self, x: torch.Tensor, params: torch.Tensor, inverse: bool):
        """``(τ(x), log|τ'(x)|)`` elementwise (or the inverse), ``params`` of shape ``[*x.shape, P]``."""
        raise NotImplementedError

    # -- machinery -------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, context) -> None:
        layout = "[B, C, H, W]" if self.event_dim == 3 else "[B, D]"
        if x.dim() != self.event_dim + 1 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {layout} with {self.in_channels} at dim 1, "
                             f"got a tensor of shape {tuple(x.shape)}")
        if not self.cond_channels:
            return
        if not isinstance(context, torch.Tensor) or not context.is_floating_point():
            raise ContextError(f"{type(self).__name__} is conditional (cond_channels={self.cond_channels}); "
                               f"pass a float context [B, {self.cond_channels}, ...], got {type(context).__name__}")
        if context.shape[0] != x.shape[0] or context.shape[1] != self.cond_channels:
            raise ContextError(f"context must be [B={x.shape[0]}, {self.cond_channels}, ...], got shape "
                               f"{tuple(context.shape)}")

    def _params(self, kept: torch.Tensor, context, dtype: torch.dtype) -> torch.Tensor:
        """The network's output as ``[B, n_changed, *spatial, P]`` in ``dtype``."""
        inp = kept
        if self.cond_channels:
            cond = broadcast_cond(context, *kept.shape[2:]) if self.event_dim == 3 else context
            inp = torch.cat([kept, cond.to(kept.dtype)], dim=1)
        h = self.net(inp).to(dtype)  # the network may run in bf16 under autocast; the map does not
        h = h.unflatten(1, (self.n_changed, self.params_per_dim))
        return h.movedim(2, -1)

    def _couple(self, x: torch.Tensor, context, inverse: bool):
        self._check(x, context)
        ld_dtype = logdet_dtype(x)
        if self.mask == "channel":
            kept, changed = split_channels(x, self.n_kept, self.parity)
            out, logd = self._transform(changed, self._params(kept, context, x.dtype), inverse)
            return join_channels(kept, out, self.parity), logd.to(ld_dtype).flatten(1).sum(1)
        m = checkerboard_mask(*x.shape[2:], self.parity, x.device, torch.bool)
        params = self._params(x * m, context, x.dtype)
        # transform only the changed pixels (a numerical inverse need not run on the kept ones)
        sel = (~m).expand_as(x)
        out, logd = self._transform(x[sel], params[sel], inverse)
        y = x.masked_scatter(sel, out)
        ladj = torch.zeros_like(x, dtype=ld_dtype).masked_scatter(sel, logd.to(ld_dtype))
        return y, ladj.flatten(1).sum(1)

    def forward(self, x: torch.Tensor, context=None):
        return self._couple(x, context, inverse=False)

    def inverse(self, y: torch.Tensor, context=None):
        return self._couple(y, context, inverse=True)
