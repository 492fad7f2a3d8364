"""Image grids as PNG files, readable at any image size.

A grid puts ``N`` images ``[N, C, H, W]`` (values in [0, 1]) in rows of ``nrow`` tiles separated
by ``padding`` black pixels (torchvision's ``make_grid`` layout), so its raw size is
``rows * (H + padding) + padding`` by ``nrow * (W + padding) + padding`` pixels. Small images
(8x8 digits) make a tiny raw grid; :func:`save_grid` then also writes a copy enlarged by an
integer factor ``k`` with nearest-neighbour upscaling (every pixel becomes a ``k x k`` block), so
that the grid is at least ``min_width`` pixels wide and no pixel value is interpolated.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> info = save_grid(torch.rand(6, 1, 8, 8), d / "g.png", nrow=3, min_width=256)
    >>> info["scale"], info["raw_size"], info["size"]  # (height, width) in pixels
    (10, [19, 28], [190, 280])
    >>> sorted(p.name for p in d.iterdir())
    ['g.png', 'g_raw.png']
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

__all__ = ["raw_path", "save_grid", "upscale_nearest"]

log = logging.getLogger(__name__)


def upscale_nearest(image: Tensor, scale: int) -> Tensor:
    """``[..., H, W] -> [..., scale * H, scale * W]``: each pixel repeated as a ``scale x scale`` block."""
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return image if scale == 1 else image.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def raw_path(path: str | Path) -> Path:
    """Where :func:`save_grid` keeps the raw grid of an upscaled ``path``: ``<stem>_raw.png``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_raw{path.suffix}")


def save_grid(images: Tensor, path: str | Path, nrow: int, padding: int = 1, min_width: int = 256) -> dict:
    """Write ``images`` ``[N, C, H, W]`` in [0, 1] as a PNG grid of ``nrow`` tiles per row.

    Non-finite pixels are counted, logged and drawn as 0; values are clamped to [0, 1]. When the
    raw grid is narrower than ``min_width`` pixels (0: never), ``path`` holds it enlarged by
    ``k = ceil(min_width / width)`` (nearest neighbour) and ``<stem>_raw.png`` the raw grid.

    Returns:
        ``{"png", "raw_png" (None when not upscaled), "scale": k, "size": [height, width],
        "raw_size", "rows", "nrow", "non_finite"}``; ``non_finite`` counts the images with any
        NaN or inf pixel.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow!r}")
    bad = (~torch.isfinite(images)).flatten(1).any(1)
    n_bad = int(bad.sum())
    path = Path(path)
    if n_bad:
        log.warning("%d of %d images contain NaN or inf; drawn as black tiles in %s", n_bad, len(images), path)
    clean = torch.nan_to_num(images.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0).clamp(0, 1)
    grid = make_grid(clean, nrow=nrow, padding=padding)
    raw_size = list(grid.shape[-2:])
    scale = max(1, math.ceil(min_width / raw_size[1])) if min_width else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(upscale_nearest(grid, scale), path)
    raw = None
    if scale > 1:
        raw = raw_path(path)
        save_image(grid, raw)
    return {"png": str(path), "raw_png": str(raw) if raw else None, "scale": scale,
            "size": [raw_size[0] * scale, raw_size[1] * scale], "raw_size": raw_size,
            "rows": math.ceil(len(images) / nrow), "nrow": nrow, "non_finite": n_bad}
