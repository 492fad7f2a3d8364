"""The per-image pipeline: uint8 pixels in, uint8 ``n_bits`` integers out.

Order: center crop (``crop``) -> resize the shorter side and center crop (``image_size``) ->
zero-pad (``pad_to``) -> random horizontal flip (train only) -> drop low bits (``n_bits``).

Everything stays an integer tensor; dequantisation happens later, on the device, in the
LightningModule (``glowlab.likelihood.dequantize``).
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

from glowlab.likelihood import reduce_bits

__all__ = ["ImageTransform", "transformed_shape"]


def _check_size(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def transformed_shape(shape, crop: int | None = None, image_size: int | None = None,
                      pad_to: int | None = None) -> tuple[int, int, int]:
    """The ``(C, H, W)`` that :class:`ImageTransform` turns images of ``shape`` into.

    Raises ValueError where an option cannot apply (a crop or pad smaller than the image side).
    """
    c, h, w = (int(v) for v in shape)
    if crop is not None:
        if crop > min(h, w):
            raise ValueError(f"data.crop={crop} is larger than the {h}x{w} images; use at most {min(h, w)}")
        h = w = crop
    if image_size is not None:
        h = w = image_size
    if pad_to is not None:
        if pad_to < max(h, w):
            raise ValueError(
                f"data.pad_to={pad_to} is smaller than the {h}x{w} images; padding cannot shrink "
                f"them (use data.image_size={pad_to} to resize instead)"
            )
        h = w = pad_to
    return c, h, w


class ImageTransform:
    """Map one image, uint8 ``[C, H, W]`` at ``source_bits``, to uint8 ``[C, H', W']`` with values
    in ``[0, 2**n_bits)``.

    Args:
        n_bits: bits per pixel of the output, 1..8.
        source_bits: bits of the stored pixels (8 for photos; 5 for scikit-learn digits). If it
            is 8, the low ``8 - n_bits`` bits are dropped (``reduce_bits``); otherwise it must
            equal ``n_bits`` and the values pass through unchanged.
        crop: center crop to ``crop x crop`` first (e.g. 148 for CelebA, as in RealNVP).
        image_size: resize so the shorter side is ``image_size`` (bilinear, antialiased), then
            center crop to ``image_size x image_size``.
        pad_to: zero-pad symmetrically to ``pad_to x pad_to`` (e.g. MNIST 28 -> 32). The padded
            pixels count in bits/dim, so such a bpd is not comparable to the unpadded one.
        hflip: flip horizontally with probability 1/2 (uses torch's global RNG, which Lightning
            seeds per worker).

    A plain class with a ``__call__``, so DataLoader workers can pickle it.
    """

    def __init__(self, n_bits: int, source_bits: int = 8, crop: int | None = None,
                 image_size: int | None = None, pad_to: int | None = None, hflip: bool = False):
        if source_bits != 8 and source_bits != n_bits:
            raise ValueError(f"cannot map {source_bits}-bit source pixels to n_bits={n_bits}")
        self.n_bits = n_bits
        self.source_bits = source_bits
        self.crop = _check_size("crop", crop)
        self.image_size = _check_size("image_size", image_size)
        self.pad_to = _check_size("pad_to", pad_to)
        self.hflip = bool(hflip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop is not None:
            x = TF.center_crop(x, [self.crop, self.crop])
        if self.image_size is not None:
            if min(x.shape[-2:]) != self.image_size:
                x = TF.resize(x, [self.image_size], antialias=True)
            x = TF.center_crop(x, [self.image_size, self.image_size])
        if self.pad_to is not None:
            h, w = x.shape[-2:]
            top, left = (self.pad_to - h) // 2, (self.pad_to - w) // 2
            x = TF.pad(x, [left, top, self.pad_to - w - left, self.pad_to - h - top], fill=0)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        if self.source_bits == 8 and self.n_bits < 8:
            x = reduce_bits(x, self.n_bits).to(torch.uint8)
        return x.contiguous()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in vars(self).items() if v not in (None, False))
        return f"{type(self).__name__}({opts})"
