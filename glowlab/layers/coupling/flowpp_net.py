"""Flow++'s coupling network: gated residual convolutions and gated multi-head self-attention.

Ho et al. (2019, sec. 3.3) replace Glow's three-convolution coupling network by a stack of blocks,
each a gated residual convolution followed by gated self-attention over all pixels, both closed by a
layer normalisation over the channels. Selected in the image couplings with ``net="flowpp"``
(``num_blocks`` is then the number of these blocks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.layers.coupling.nets import ZeroConv2d

__all__ = ["FlowppCouplingNet", "concat_elu"]


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``[ELU(x), ELU(-x)]`` along the channels, ``[B, C, ...] -> [B, 2C, ...]``: an ELU that passes
    information of both signs (concatenated ELU, as in PixelCNN++ and Flow++)."""
    return F.elu(torch.cat([x, -x], dim=1))


def _glu(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Gated linear unit: split ``x`` in halves ``a, b`` along ``dim`` and return ``a * sigmoid(b)``."""
    a, b = x.chunk(2, dim=dim)
    return a * torch.sigmoid(b)


def _channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """Layer normalisation of ``[B, C, H, W]`` over C alone (each pixel on its own)."""
    return norm(x.movedim(1, -1)).movedim(-1, 1)


def _sinusoids(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[N, dim]`` sine/cosine features of the integer ``positions [N]`` at geometric frequencies
    ``10000^(-2i/dim)`` (Vaswani et al. 2017); an odd ``dim`` gets a zero last column."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / max(half, 1))
    angles = positions[:, None].float() * freqs[None]
    out = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(out, (0, dim - 2 * half))


def position_encoding(height: int, width: int, channels: int, device=None) -> torch.Tensor:
    """Fixed 2-D position features ``[H*W, channels]`` (row-major pixels): the first half of the
    channels encode the row, the rest the column. Self-attention alone is blind to where a pixel is."""
    rows = _sinusoids(torch.arange(height, device=device), channels // 2)
    cols = _sinusoids(torch.arange(width, device=device), channels - channels // 2)
    return torch.cat([rows[:, None].expand(-1, width, -1), cols[None].expand(height, -1, -1)], dim=2).flatten(0, 1)


class _GatedConv(nn.Module):
    """``x + GLU(conv1x1(concat_elu(dropout? conv3x3(concat_elu(x)))))``, then a channel layer norm."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.gate = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = concat_elu(self.conv(concat_elu(x)))
        h = _glu(self.gate(self.dropout(h)), dim=1)
        return _channel_norm(self.norm, x + h)


class _GatedAttention(nn.Module):
    """``x + GLU(W_g · MHA(x + pos))`` over the ``H*W`` pixels, then a channel layer norm."""

    def __init__(self, channels: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.gate = nn.Linear(channels, 2 * channels)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        pos = position_encoding(h, w, c, x.device).to(seq.dtype)
        q, k, v = self.qkv(seq + pos).unflatten(2, (3, self.heads, c // self.heads)).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        att = att.transpose(1, 2).flatten(2)  # [B, HW, C]
        out = self.norm(seq + _glu(self.gate(att), dim=-1))
        return out.transpose(1, 2).unflatten(2, (h, w))


class FlowppCouplingNet(nn.Module):
    """Flow++'s coupling network, ``[B, in_channels, H, W] -> [B, out_channels, H, W]``.

    ``h = conv3x3(x)``; then ``num_blocks`` times

    * gated residual convolution: ``h = LN(h + GLU(conv1x1(concat_elu(conv3x3(concat_elu(h))))))``,
      where ``GLU(a, b) = a * sigmoid(b)`` halves the ``2 * hidden`` channels and ``LN`` normalises
      each pixel's channels;
    * gated self-attention (``attention=True``): ``h = LN(h + GLU(W_g · MHA(h + pos)))``, ``heads``
      heads over all ``H*W`` pixels, ``pos`` fixed 2-D sinusoidal position features;

    and finally ``out = ZeroConv2d(concat_elu(h))``. The output layer is zero-initialised, so the
    network outputs 0 and a coupling using it starts at (a scaled) identity.

    Differences from the paper's code, stated: plain convolutions with the layer norms instead of
    weight normalisation with data-dependent initialisation; fixed rather than learned position
    embeddings (so any ``H x W`` works); no extra 1x1 projection of the attention output (the gate's
    linear layer is the projection). ``dropout`` (Flow++ used 0.2 on CIFAR-10) acts in training mode
    only: forward and inverse of a coupling then see different masks, so invert in ``eval()`` mode,
    and do not combine it with ``memory_saving="reversible"``.

    Cost: the attention is ``O((H*W)^2 * hidden)`` per image, fine at 16x16 or 14x14, heavy at 64x64.
    Under bf16 autocast the convolutions, linears and attention run in bf16; the couplings cast the
    output back to the flow's dtype.

    Args:
        in_channels: input channels (the coupling's kept part plus any conditioning channels).
        out_channels: output channels (the coupling's parameters).
        hidden_channels: width of every block; divisible by ``heads`` when ``attention=True``.
        num_blocks: gated conv (+ attention) blocks; 0 leaves ``conv3x3 -> concat_elu -> ZeroConv2d``.
        heads: attention heads.
        dropout: dropout probability in the gated convolutions and on the attention weights.
        attention: False gives the gated-convolution-only variant (Flow++'s ablation without attention).

    Example:
        >>> import torch
        >>> net = FlowppCouplingNet(2, 6, hidden_channels=8, num_blocks=1, heads=2)
        >>> x = torch.randn(3, 2, 5, 5)
        >>> tuple(net(x).shape), net(x).abs().max().item()  # zero-initialised output layer
        ((3, 6, 5, 5), 0.0)
        >>> from glowlab.layers.coupling import AffineCoupling
        >>> layer = AffineCoupling(4, 8, net="flowpp", num_blocks=1)  # a coupling using it
        >>> y, ladj = layer(torch.randn(2, 4, 4, 4))
        >>> tuple(y.shape), tuple(ladj.shape)
        ((2, 4, 4, 4), (2,))

    References:
        Ho, Chen, Srinivas, Duan & Abbeel, "Flow++: Improving Flow-Based Generative Models with
        Variational Dequantization and Architecture Design", ICML 2019, sec. 3.3.
        Dauphin, Fan, Auli & Grangier, "Language Modeling with Gated Convolutional Networks", ICML 2017 (GLU).
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (multi-head attention, sinusoids).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 96, num_blocks: int = 2,
                 heads: int = 4, dropout: float = 0.0, attention: bool = True):
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                 ("hidden_channels", hidden_channels, 1), ("num_blocks", num_blocks, 0),
                                 ("heads", heads, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"FlowppCouplingNet: {name} must be an integer >= {low}, got {value!r}")
        if attention and hidden_channels % heads:
            raise ValueError(f"FlowppCouplingNet: hidden_channels={hidden_channels} is not divisible by "
                             f"heads={heads}; choose hidden_channels a multiple of heads (e.g. "
                             f"{heads * max(1, round(hidden_channels / heads))}) or change heads")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"FlowppCouplingNet: dropout must be in [0, 1), got {dropout!r}")
        self.attention = attention
        self.input = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
        blocks: list[nn.Module] = []
        for _ in range(num_blocks):
            blocks.append(_GatedConv(hidden_channels, dropout))
            if attention:
                blocks.append(_GatedAttention(hidden_channels, heads, dropout))
        self.blocks = nn.Sequential(*blocks)
        self.output = ZeroConv2d(2 * hidden_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(concat_elu(self.blocks(self.input(x))))
