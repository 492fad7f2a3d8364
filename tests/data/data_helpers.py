"""Writers of real on-disk dataset formats, for the tests of ``glowlab.data``.

The writers are independent of ``glowlab.data``'s readers (the IDX header is spelled out byte by
byte here), so a reader bug is not mirrored by a writer bug.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
MNIST_FIRST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file: 0, 0, 0x08 (ubyte), ndim, big-endian sizes, data."""
    array = np.asarray(array, dtype=np.uint8)
    blob = bytes([0, 0, 0x08, array.ndim])
    for size in array.shape:
        blob += int(size).to_bytes(4, "big")
    blob += array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)
    return path


def write_png(path: Path, array: np.ndarray) -> None:
    """Save uint8 ``[H, W, 3]`` as RGB, in the format of the suffix (``.png``: lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="RGB").save(path)
