"""Networks used inside coupling layers and conditional priors (not flows themselves)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.layers.elementwise.actnorm import ActNorm

__all__ = ["ZeroConv2d", "CouplingNet", "ResNetCouplingNet", "MLP"]


class ZeroConv2d(nn.Module):
    """A 3x3 convolution initialised to output zeros, with a learned per-channel output scale
    ``exp(3 * logs)`` (as in Glow), so flows start at the identity and the prior at N(0, I)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, logscale_factor: float = 3.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))
        self.logscale_factor = logscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (conv(x, W) + b) * e == conv(x, W * e, b * e): the scale is folded into the (small) weight
        # instead of costing a pass over the output
        scale = (self.logs * self.logscale_factor).exp().view(-1)
        conv = self.conv
        return F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1), conv.bias * scale,
                        conv.stride, conv.padding, conv.dilation, conv.groups)


class _ActNormMap(nn.Module):
    """ActNorm used as a plain layer inside a network (the logdet is not part of the flow's)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = ActNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)[0]


class CouplingNet(nn.Module):
    """Glow's coupling network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-initialised conv3x3.

    ``[B, in_channels, H, W] -> [B, out_channels, H, W]``. With ``actnorm=True`` an ActNorm (and
    no bias) follows each of the first two convolutions, as in the Glow paper's code.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 512, actnorm: bool = True):
        super().__init__()
        self.actnorm = actnorm
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=not actnorm)]
        if actnorm:
            layers.append(_ActNormMap(hidden_channels))
        layers += [nn.ReLU(), nn.Conv2d(hidden_channels, hidden_channels, 1, bias=not actnorm)]
        if actnorm:
            layers.append(_ActNormMap(hidden_channels))
        layers += [nn.ReLU(), ZeroConv2d(hidden_channels, out_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.actnorm:
            return self.net(x)
        conv1, norm1, _, conv2, norm2, _, out = self.net
        norm1, norm2 = norm1.norm, norm2.norm
        if self.training and not (norm1.is_initialized() and norm2.is_initialized()):
            return self.net(x)  # ActNorm's data-dependent initialisation needs the conv outputs
        # ActNorm folded into the preceding bias-free conv: (conv(x, W) + loc) * s == conv(x, W s, loc s).
        # The channels_last layout is the fast one for oneDNN's convolutions on the CPU; the
        # ReLUs run in place (a conv's backward does not need its output).
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        w1, b1 = _fold(conv1, norm1)
        w2, b2 = _fold(conv2, norm2)

        def run(x: torch.Tensor) -> torch.Tensor:
            h = F.relu(F.conv2d(x, w1, b1, 1, 1), inplace=True)
            h = F.relu(F.conv2d(h, w2, b2), inplace=True)
            return out(h)

        n = _inference_chunk(x, conv1.out_channels)
        if n < x.shape[0]:  # cache blocking: same values, hidden activations stay small
            return torch.cat([run(c) for c in x.split(n)])
        return run(x)


_CHUNK_BYTES = 8 << 20


def _inference_chunk(x: torch.Tensor, hidden_channels: int) -> int:
    """Images per chunk for a no-grad CPU pass, so a hidden activation stays under ~8 MiB (in the
    CPU caches, and below the allocator's mmap threshold): at 16x16 with 512 hidden channels,
    sampling 64 images runs as 4 chunks of 16, about 1.5x faster. With grad: the whole batch."""
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return x.shape[0]
    per_image = hidden_channels * x.shape[2] * x.shape[3] * x.element_size()
    return max(1, _CHUNK_BYTES // per_image)


def _fold(conv: nn.Conv2d, norm: ActNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``norm(conv(x))`` for a bias-free ``conv``, as one convolution."""
    scale = norm.log_scale.exp()
    return conv.weight * scale.view(-1, 1, 1, 1), norm.loc * scale


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, actnorm: bool):
        super().__init__()
        norm = (lambda: _ActNormMap(channels)) if actnorm else nn.Identity
        self.body = nn.Sequential(
            norm(), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
            norm(), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetCouplingNet(nn.Module):
    """RealNVP's residual coupling network: conv3x3, ``num_blocks`` pre-activation residual blocks,
    ReLU, then a zero-initialised conv3x3. ``[B, in, H, W] -> [B, out, H, W]``.

    A ReLU network is positively homogeneous up to its biases: for large inputs its output grows in
    proportion to them, and each residual block can amplify it. Used as an affine coupling's
    translation, that growth compounds over a stack of couplings; see
    ``AffineCoupling(translation_bound=...)``.

    Example:
        >>> import torch
        >>> net = ResNetCouplingNet(2, 4, hidden_channels=8, num_blocks=1)
        >>> net(torch.randn(3, 2, 5, 5)).abs().max().item()  # zero-initialised output layer
        0.0
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 64,
                 num_blocks: int = 4, actnorm: bool = True):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            *[_ResidualBlock(hidden_channels, actnorm) for _ in range(num_blocks)],
            nn.ReLU(),
            ZeroConv2d(hidden_channels, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLP(nn.Module):
    """NICE's coupling function: ``hidden_layers`` ReLU layers of ``hidden_features`` units and a
    zero-initialised linear output. ``[B, in_features] -> [B, out_features]``."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int = 1000, hidden_layers: int = 5):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_features), nn.ReLU()]
            width = hidden_features
        last = nn.Linear(width, out_features)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
