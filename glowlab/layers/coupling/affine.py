"""Affine and additive coupling layers (NICE, RealNVP, Glow) with channel and checkerboard masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.core.bijection import Bijection, logdet_dtype, zero_ladj
from glowlab.core.recompute import context_input, grads_of, recompute_by_inverse
from glowlab.layers.coupling.flowpp_net import FlowppCouplingNet
from glowlab.layers.coupling.nets import MLP, CouplingNet, ResNetCouplingNet

__all__ = ["AffineCoupling", "AdditiveCoupling", "MLPAdditiveCoupling", "checkerboard_mask", "broadcast_cond"]

MASKS = ("channel", "checkerboard")
SCALES = ("sigmoid", "tanh")
NETS = ("glow", "resnet", "flowpp")


def checkerboard_mask(height: int, width: int, parity: int, device=None, dtype=None) -> torch.Tensor:
    """``[1, 1, H, W]`` mask with ones where ``(i + j) % 2 == parity``: the entries left unchanged."""
    i = torch.arange(height, device=device).view(-1, 1)
    j = torch.arange(width, device=device).view(1, -1)
    return ((i + j) % 2 == parity).to(dtype or torch.float32).view(1, 1, height, width)


def log_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(z))``, stable for every z, differentiable to any order.

    Same values as ``F.logsigmoid`` (to the last bits) but several times faster on the CPU in
    float32/float64, whose ``logsigmoid`` kernel goes through a slow ``log1p``. Below
    ``z = -60``, ``log sigmoid(z) = z - log1p(exp(z))`` equals ``z`` to double precision; above,
    ``sigmoid(z) >= 8.7e-27`` is a normal float32, so ``log`` of it is finite and accurate.
    """
    if z.device.type != "cpu" or z.dtype not in (torch.float32, torch.float64):
        return F.logsigmoid(z)
    return torch.where(z > -60.0, torch.log(torch.sigmoid(z.clamp(min=-60.0))), z)


def broadcast_cond(context: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bring a conditioning input to ``[B, K, H, W]``: a vector ``[B, K]`` is tiled over space, a
    map ``[B, K, h, w]`` is average-pooled (or nearest-upsampled) to ``H x W``."""
    if context.dim() == 2:
        return context[:, :, None, None].expand(-1, -1, height, width)
    if context.dim() == 4:
        if context.shape[2:] == (height, width):
            return context
        if context.shape[2] >= height:
            return F.adaptive_avg_pool2d(context, (height, width))
        return F.interpolate(context, size=(height, width), mode="nearest")
    raise ValueError(f"context must be [B, K] or [B, K, H, W], got shape {tuple(context.shape)}")


class AffineCoupling(Bijection):
    """Affine coupling: part ``a`` of x is kept and conditions an affine map of part ``b``.

    ``h = NN(x_a [, context])``, ``t, h_s = split(h)``, ``y_b = (x_b + t) * s`` and ``y_a = x_a``, with

    * ``scale_fn="sigmoid"`` (Glow): ``s = sigmoid(h_s + 2)``, computed as ``exp(logsigmoid(.))``
      because autocast keeps ``log``/``exp`` in float32 but not ``sigmoid``;
    * ``scale_fn="tanh"`` (RealNVP): ``log s = scale * tanh(h_s)`` with a learned per-channel scale.

    Logdet ``[B]`` nats: the sum of ``log s`` over part ``b``. The network's last layer is
    zero-initialised, so the layer starts at ``t = 0`` and a constant scale (``sigmoid(2)`` for
    Glow, 1 for tanh): the identity up to a scale.

    **Bounded translation.** With ``translation_bound=b`` the translation is soft-clamped,
    ``t = b * tanh(t_raw / b)`` (``|t| < b``; the identity for ``|t_raw| << b``). The ReLU networks
    are positively homogeneous, so an unbounded ``t`` grows with the magnitude of their input; in a
    stack of couplings whose networks amplify (e.g. a RealNVP after its parameters moved by 0.05)
    the growth compounds from coupling to coupling (latents beyond 1e20 and a failed round trip in
    float64, ``tests/models/test_realnvp.py``). Bounding ``t`` stops the compounding. ``None`` (default) keeps the
    unbounded map of glowlab 0.1, so existing checkpoints compute what they did.

    Layouts: images ``[B, C, H, W]`` (``event_dim=3``) or vectors ``[B, D]`` (``event_dim=1``,
    network ``"mlp"``). Masks: ``"channel"`` keeps the first ``C // 2`` channels (``parity=1``
    keeps the last ones); ``"checkerboard"`` (images only) keeps the pixels with
    ``(i + j) % 2 == parity`` in every channel.

    Args:
        in_channels: C of the input ``[B, C, H, W]`` (D of vectors ``[B, D]``).
        hidden_channels: width of the coupling network.
        mask: ``"channel"`` or ``"checkerboard"``.
        parity: 0 or 1, which part is kept.
        net: ``"glow"`` (conv3x3-conv1x1-conv3x3), ``"resnet"`` (RealNVP residual network) or
            ``"flowpp"`` (Flow++ gated convolutions and attention) for images, ``"mlp"`` for vectors
            (default: ``"glow"`` for images, ``"mlp"`` for vectors).
        num_blocks: residual blocks of the ``"resnet"`` network, Flow++ blocks of ``"flowpp"``,
            hidden layers of the ``"mlp"``.
        actnorm: ActNorm inside the convolutional coupling network.
        cond_channels: K of an optional conditioning input (``[B, K]`` or ``[B, K, h, w]``),
            concatenated to the network input.
        scale_fn: ``"sigmoid"`` or ``"tanh"``.
        event_dim: 3 for images, 1 for vectors.
        translation_bound: ``b > 0`` soft-clamps the translation to ``|t| < b``; None: unbounded.

    Example:
        >>> import torch
        >>> layer = AffineCoupling(4, 8, event_dim=1)  # vectors [B, 4], an MLP conditioner
        >>> with torch.no_grad():
        ...     _ = [p.add_(0.1 * torch.randn_like(p)) for p in layer.parameters()]
        >>> x = torch.randn(3, 4)
        >>> y, ladj = layer(x)
        >>> x_back, ladj_inv = layer.inverse(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-5)), bool(torch.allclose(ladj_inv, -ladj))
        (True, True)

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    additive = False
    event_dim = 3

    def __init__(self, in_channels: int, hidden_channels: int = 512, mask: str = "channel",
                 parity: int = 0, net: str | None = None, num_blocks: int = 4, actnorm: bool = True,
                 cond_channels: int = 0, scale_fn: str = "sigmoid", event_dim: int = 3,
                 translation_bound: float | None = None):
        super().__init__()
        if event_dim not in (1, 3):
            raise ValueError(f"event_dim must be 3 (images [B, C, H, W]) or 1 (vectors [B, D]), got {event_dim!r}")
        net = net or ("glow" if event_dim == 3 else "mlp")
        nets, masks = (NETS, MASKS) if event_dim == 3 else (("mlp",), ("channel",))
        if mask not in masks:
            raise ValueError(f"mask must be one of {masks} for event_dim={event_dim}, got {mask!r}")
        if scale_fn not in SCALES:
            raise ValueError(f"scale_fn must be one of {SCALES}, got {scale_fn!r}")
        if net not in nets:
            raise ValueError(f"net must be one of {nets} for event_dim={event_dim}, got {net!r}")
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}")
        if mask == "channel" and in_channels < 2:
            raise ValueError(
                f"a channel-mask coupling needs at least 2 channels to split, got in_channels="
                f"{in_channels}; squeeze the input first or use mask='checkerboard'"
            )
        if translation_bound is not None and not translation_bound > 0:
            raise ValueError(f"translation_bound must be > 0 or None, got {translation_bound!r}")
        self.event_dim = event_dim  # type: ignore[misc]  # per instance: images or vectors
        self.in_channels, self.mask, self.parity = in_channels, mask, parity
        self.cond_channels, self.scale_fn, self.translation_bound = cond_channels, scale_fn, translation_bound
        if mask == "channel":
            n_kept = in_channels // 2 if parity == 0 else in_channels - in_channels // 2
            self.n_kept, self.n_changed = n_kept, in_channels - n_kept
        else:
            self.n_kept, self.n_changed = in_channels, in_channels
        out = self.n_changed * (1 if self.additive else 2)
        net_in = self.n_kept + cond_channels
        if net == "glow":
            self.net = CouplingNet(net_in, out, hidden_channels, actnorm=actnorm)
        elif net == "resnet":
            self.net = ResNetCouplingNet(net_in, out, hidden_channels, num_blocks, actnorm=actnorm)
        elif net == "flowpp":
            self.net = FlowppCouplingNet(net_in, out, hidden_channels, num_blocks)
        else:
            self.net = MLP(net_in, out, hidden_channels, num_blocks)
        if scale_fn == "tanh" and not self.additive:
            shape = (self.n_changed, 1, 1) if event_dim == 3 else (self.n_changed,)
            self.tanh_scale = nn.Parameter(torch.ones(shape))

    # -- helpers -----------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, context: torch.Tensor | None) -> None:
        if x.dim() != self.event_dim + 1 or x.shape[1] != self.in_channels:
            layout = f"[B, {self.in_channels}, H, W]" if self.event_dim == 3 else f"[B, {self.in_channels}]"
            raise ValueError(f"coupling expects input {layout}, got {tuple(x.shape)}")
        if self.cond_channels and context is None:
            raise ValueError(f"this coupling is conditional (cond_channels={self.cond_channels}); pass context")
        if self.cond_channels and context.shape[1] != self.cond_channels:
            raise ValueError(f"context must have {self.cond_channels} channels, got shape {tuple(context.shape)}")

    def _net_params(self, kept: torch.Tensor, context: torch.Tensor | None, dtype: torch.dtype):
        """Run the network on the kept part; return ``(t, log_s)`` in ``dtype`` (``log_s`` None if additive)."""
        inp = kept
        if self.cond_channels:
            cond = broadcast_cond(context, *kept.shape[2:]) if self.event_dim == 3 else context
            inp = torch.cat([kept, cond.to(kept.dtype)], dim=1)
        h = self.net(inp).to(dtype)  # the network may run in bf16 under autocast; the flow does not
        if self.additive:
            t, log_s = h, None
        else:
            t, h_s = h.chunk(2, dim=1)
            if self.scale_fn == "sigmoid":
                log_s = log_sigmoid(h_s + 2.0)
            else:
                log_s = self.tanh_scale.to(dtype) * torch.tanh(h_s)
        if self.translation_bound is not None:
            t = self.translation_bound * torch.tanh(t / self.translation_bound)
        return t, log_s

    def _split(self, x: torch.Tensor):
        if self.parity == 0:
            return x[:, : self.n_kept], x[:, self.n_kept:]
        return x[:, self.n_changed:], x[:, : self.n_changed]

    def _join(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([kept, changed] if self.parity == 0 else [changed, kept], dim=1)

    # -- the flow ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, context=None):
        self._check(x, context)
        ld_dtype = logdet_dtype(x)
        if self.mask == "channel":
            kept, changed = self._split(x)
            t, log_s = self._net_params(kept, context, x.dtype)
            if log_s is None:
                return self._join(kept, changed + t), zero_ladj(x)
            y = self._join(kept, (changed + t) * log_s.exp())
            return y, log_s.to(ld_dtype).flatten(1).sum(1)
        m = checkerboard_mask(*x.shape[2:], self.parity, x.device, x.dtype)
        t, log_s = self._net_params(x * m, context, x.dtype)
        if log_s is None:
            return x + (1 - m) * t, zero_ladj(x)
        log_s = log_s * (1 - m)
        y = m * x + (1 - m) * (x + t) * log_s.exp()
        return y, log_s.to(ld_dtype).flatten(1).sum(1)

    def inverse(self, y: torch.Tensor, context=None):
        self._check(y, context)
        ld_dtype = logdet_dtype(y)
        if self.mask == "channel":
            kept, changed = self._split(y)
            t, log_s = self._net_params(kept, context, y.dtype)
            if log_s is None:
                return self._join(kept, changed - t), zero_ladj(y)
            # multiply by exp(-log s) instead of dividing by s: finite even for tiny scales
            return self._join(kept, changed * (-log_s).exp() - t), -log_s.to(ld_dtype).flatten(1).sum(1)
        m = checkerboard_mask(*y.shape[2:], self.parity, y.device, y.dtype)
        t, log_s = self._net_params(y * m, context, y.dtype)
        if log_s is None:
            return y - (1 - m) * t, zero_ladj(y)
        log_s = log_s * (1 - m)
        return m * y + (1 - m) * (y * (-log_s).exp() - t), -log_s.to(ld_dtype).flatten(1).sum(1)

    # -- reversible backpropagation (glowlab.core.recompute) ----------------------------------------
    def reconstruct_input_and_backward(self, y, context, grad_y, grad_ladj, params, need_input_grad: bool):
        """The recompute step of :mod:`glowlab.core.recompute`. Channel masks: one network evaluation
        serves both the inverse and the recomputed forward, because the kept half of ``y`` *is* the
        kept half of ``x``. Checkerboard masks: the default (inverse, then forward)."""
        if self.mask != "channel":
            return recompute_by_inverse(self, y, context, grad_y, grad_ladj, params, need_input_grad)
        kept_y, changed_y = self._split(y)
        g_kept, g_changed = self._split(grad_y)
        kept = kept_y.detach().requires_grad_(need_input_grad)
        t, log_s = self._net_params(kept, context, y.dtype)
        with torch.no_grad():
            changed_x = changed_y - t if log_s is None else changed_y * (-log_s).exp() - t
        changed = changed_x.detach().requires_grad_(need_input_grad)
        if log_s is None:
            outs, gouts = [changed + t], [g_changed]
        else:  # exactly the forward's arithmetic
            outs = [(changed + t) * log_s.exp(), log_s.to(logdet_dtype(y)).flatten(1).sum(1)]
            gouts = [g_changed, grad_ladj]
        c = context_input(context)
        inputs = ([kept, changed] if need_input_grad else []) + ([c] if c is not None else []) + list(params)
        grads = grads_of(outs, inputs, gouts)
        g_x = None
        if need_input_grad:
            gk, gc = grads.pop(0), grads.pop(0)
            g_x = self._join(g_kept if gk is None else g_kept + gk, g_changed if gc is None else gc)
        g_c = grads.pop(0) if c is not None else None
        with torch.no_grad():
            x = self._join(kept_y, changed_x)
        return x, g_x, g_c, grads


class AdditiveCoupling(AffineCoupling):
    """Additive (NICE) coupling ``y_b = x_b + t(x_a)``: volume preserving, logdet ``[B]`` is zero.

    Takes the same arguments as :class:`AffineCoupling` (``scale_fn`` is ignored).
    """

    additive = True


class MLPAdditiveCoupling(Bijection):
    """NICE's additive coupling on the flattened image, ``[B, C, H, W]`` in and out.

    The ``D = C*H*W`` entries are split by index parity (even/odd); ``y_b = x_b + MLP(x_a)``.
    Logdet ``[B]`` is zero.
    """

    def __init__(self, num_features: int, hidden_features: int = 1000, hidden_layers: int = 5, parity: int = 0):
        super().__init__()
        if num_features < 2:
            raise ValueError(f"NICE coupling needs at least 2 features, got {num_features}")
        idx = torch.arange(num_features)
        self.register_buffer("kept_idx", idx[idx % 2 == parity])
        self.register_buffer("changed_idx", idx[idx % 2 != parity])
        self.num_features = num_features
        self.mlp = MLP(len(self.kept_idx), len(self.changed_idx), hidden_features, hidden_layers)

    def _shift(self, x: torch.Tensor, sign: float) -> torch.Tensor:
        flat = x.flatten(1)
        if flat.shape[1] != self.num_features:
            raise ValueError(f"NICE coupling expects {self.num_features} features per sample, got {tuple(x.shape)}")
        t = self.mlp(flat[:, self.kept_idx]).to(flat.dtype)
        out = flat.clone()
        out[:, self.changed_idx] = flat[:, self.changed_idx] + sign * t
        return out.view_as(x)

    def forward(self, x: torch.Tensor, context=None):
        return self._shift(x, 1.0), zero_ladj(x)

    def inverse(self, y: torch.Tensor, context=None):
        return self._shift(y, -1.0), zero_ladj(y)
