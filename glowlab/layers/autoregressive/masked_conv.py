"""Masked convolutions for images: autoregressive in raster order over pixels, and in channel
order within a pixel, as in PixelCNN.

Element ``(c, h, w)`` of a ``C x H x W`` image has rank ``(h W + w) C + c``. A network
``[B, C, H, W] -> [B, P, C, H, W]`` built from :class:`MaskedConv2d` computes the ``P`` parameters
of element ``(c, h, w)`` from the pixels before ``(h, w)`` in raster order (all channels) and the
channels before ``c`` of pixel ``(h, w)`` itself.

Each kernel sees the rows above its centre and the pixels left of it on the centre row. At the
centre, channels are split into ``C`` groups (hidden channel ``j`` is in group ``j mod C``); output
group ``g`` sees input groups ``< g`` in the first layer (mask "A") and ``<= g`` after it (mask
"B"). Like PixelCNN's plain stack, the receptive field has a blind spot to the upper right: the
map stays autoregressive (triangular), it just cannot use those pixels.

``reverse=True`` reverses the order (the last element comes first) by flipping the image over
channels, rows and columns around the network; a MAF alternates the two.

References:
    van den Oord, Kalchbrenner, Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML 2016.

Example:
    >>> import torch
    >>> net = MaskedConvNet(channels=2, hidden_channels=8, hidden_layers=2, params_per_channel=3)
    >>> net(torch.randn(4, 2, 5, 5)).shape
    torch.Size([4, 3, 2, 5, 5])
"""

from __future__ import annotations

import torch
from torch import nn

from glowlab.layers.autoregressive.made import activation_module, masked_weight

__all__ = ["MaskedConv2d", "MaskedConvNet", "raster_order"]


def raster_order(image_shape, reverse: bool = False) -> torch.Tensor:
    """``[C, H, W]`` long: the rank of each element, ``(h W + w) C + c`` (or ``D - 1`` minus it)."""
    c, h, w = (int(v) for v in image_shape)
    rank = (torch.arange(h * w).view(1, h, w) * c + torch.arange(c).view(c, 1, 1))
    return c * h * w - 1 - rank if reverse else rank


class MaskedConv2d(nn.Conv2d):
    """A same-padded ``kernel_size`` convolution with a causal mask (persistent buffer).

    ``in_groups``/``out_groups`` are the channel groups (``[in]``, ``[out]`` long); at the kernel
    centre, output ``o`` sees input ``i`` iff ``in_groups[i] < out_groups[o]`` (``strict``, mask A)
    or ``<=`` (mask B).
    """

    def __init__(self, in_groups: torch.Tensor, out_groups: torch.Tensor, kernel_size: int, strict: bool):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        super().__init__(len(in_groups), len(out_groups), kernel_size, padding=kernel_size // 2)
        k = kernel_size // 2
        mask = torch.zeros(len(out_groups), len(in_groups), kernel_size, kernel_size)
        mask[:, :, :k, :] = 1  # rows above
        mask[:, :, k, :k] = 1  # left on the centre row
        centre = out_groups[:, None] > in_groups[None, :] if strict else out_groups[:, None] >= in_groups[None, :]
        mask[:, :, k, k] = centre.to(mask.dtype)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, masked_weight(self), self.bias)


class MaskedConvNet(nn.Module):
    """``[B, C, H, W] -> [B, P, C, H, W]``, autoregressive in raster-then-channel order.

    Args:
        channels: ``C`` of the image.
        hidden_channels: width of the hidden layers (``>= C``, so every channel group is present).
        hidden_layers: number of hidden masked convolutions (``>= 1``); a 1x1 masked convolution
            then gives the ``P`` parameters per element, zero-initialised.
        params_per_channel: ``P``.
        kernel_size: odd kernel size of the hidden convolutions.
        reverse: reverse the order (flip channels, rows and columns around the network).
        context_features: width of a tensor context ``[B, F]``, added as a per-channel bias after
            the first convolution (it carries no pixel information, so the mask is unaffected).
        activation: a name in :data:`glowlab.layers.autoregressive.made.ACTIVATIONS`.
    """

    def __init__(self, channels: int, hidden_channels: int = 64, hidden_layers: int = 2, params_per_channel: int = 2,
                 kernel_size: int = 3, reverse: bool = False, context_features: int = 0, activation: str = "relu"):
        super().__init__()
        if hidden_channels < channels or hidden_layers < 1:
            raise ValueError(f"a masked convolution network over {channels} channels needs hidden_channels >= "
                             f"{channels} and hidden_layers >= 1, got {hidden_channels} and {hidden_layers}")
        self.channels, self.params_per_channel, self.reverse = channels, params_per_channel, reverse
        self.context_features = context_features
        data = torch.arange(channels)
        hid = torch.arange(hidden_channels) % channels
        out = data.repeat(params_per_channel)  # output p * C + c is parameter p of channel c
        convs = [MaskedConv2d(data, hid, kernel_size, strict=True)]
        convs += [MaskedConv2d(hid, hid, kernel_size, strict=False) for _ in range(hidden_layers - 1)]
        convs.append(MaskedConv2d(hid, out, 1, strict=False))
        nn.init.zeros_(convs[-1].weight)
        nn.init.zeros_(convs[-1].bias)
        self.convs = nn.ModuleList(convs)
        self.act = activation_module(activation)
        self.context = nn.Linear(context_features, hidden_channels) if context_features else None

    @property
    def receptive_rows(self) -> int:
        """How many rows above its own an output sees (through all layers): ``Σ kernel // 2``."""
        return sum(conv.kernel_size[0] // 2 for conv in self.convs)

    def _stack(self, x: torch.Tensor, context) -> torch.Tensor:
        """The convolutions on ``x`` in the network's own (possibly flipped) coordinates."""
        h = self.convs[0](x)
        if self.context is not None:
            if context is None or context.shape != (x.shape[0], self.context_features):
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"this network is conditional: pass a context of shape [B, "
                                 f"{self.context_features}] with B={x.shape[0]}, got {got}")
            h = h + self.context(context.to(h.dtype))[:, :, None, None]
        for conv in self.convs[1:]:
            h = conv(self.act(h))
        return h

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__} over {self.channels} channels expects [B, {self.channels}, H, W], "
                             f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x)
        h = self._stack(x.flip(1, 2, 3) if self.reverse else x, context)
        b, _, height, width = x.shape
        params = h.view(b, self.params_per_channel, self.channels, height, width)
        return params.flip(2, 3, 4) if self.reverse else params

    def row_params(self, x: torch.Tensor, row: int, context: torch.Tensor | None = None) -> torch.Tensor:
        """The parameters of image row ``row`` only, ``[B, P, C, W]``, equal to ``forward(x)[:, :, :, row]``.

        Since an output sees only :attr:`receptive_rows` rows above it (and none below), the
        convolutions run on those rows alone: what makes sampling an image row by row cost
        ``receptive_rows + 1`` rows per pass instead of ``H``.
        """
        self._check(x)
        height = x.shape[2]
        r = height - 1 - row if self.reverse else row
        xf = x.flip(1, 2, 3) if self.reverse else x
        h = self._stack(xf[:, :, max(0, r - self.receptive_rows):r + 1], context)[:, :, -1]
        params = h.reshape(x.shape[0], self.params_per_channel, self.channels, x.shape[3])
        return params.flip(2, 3) if self.reverse else params
