"""Reading the IDX files MNIST is distributed in (``*-images-idx3-ubyte[.gz]``, ``*-labels-idx1-ubyte[.gz]``).

The IDX format (http://yann.lecun.com/exdb/mnist/) is a big-endian header followed by the raw values:

* bytes 0-1: zero; byte 2: the value type (``0x08`` = unsigned byte, the only type MNIST uses);
  byte 3: the number of dimensions ``k``;
* ``k`` big-endian uint32 sizes;
* ``prod(sizes)`` values, row-major.

So the magic number (the first four bytes read as one uint32) is ``0x00000803`` for an image file
``[N, H, W]`` and ``0x00000801`` for a label file ``[N]``. Any file that does not match (wrong magic,
a truncated or over-long payload, a broken gzip stream) raises :class:`IDXFormatError` naming it.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["IDXFormatError", "read_idx", "read_idx_shape", "find_idx_file", "load_idx_images"]

UBYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


class IDXFormatError(ValueError):
    """An IDX file is corrupt, truncated, or not the kind of IDX file expected."""


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _parse_header(raw: bytes, path: Path, ndim: int | None) -> tuple[int, ...]:
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE or (ndim is not None and raw[3] != ndim):
        want = f"0x{(UBYTE << 8) | ndim:08x}" if ndim is not None else "0x000008nn"
        raise IDXFormatError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected {want} "
            f"(unsigned bytes, {ndim if ndim is not None else 'any number of'} dimensions); "
            "the file is corrupt or not an uncompressed/gzip IDX file"
        )
    k = raw[3]
    if len(raw) < 4 + 4 * k:
        raise IDXFormatError(f"{path}: truncated IDX header (needs {4 + 4 * k} bytes, has {len(raw)})")
    return tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(k))


def _read_bytes(path: Path, limit: int = -1) -> bytes:
    try:
        with _open(path) as f:
            return f.read(limit)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise IDXFormatError(f"{path}: broken gzip stream ({err}); the file is corrupt or truncated") from err


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzip-compressed if the name ends in ``.gz``).

    Args:
        path: the file.
        ndim: the number of dimensions expected (3 for images, 1 for labels), or None for any.
    Returns:
        A ``uint8`` array of the shape in the header, e.g. ``[N, 28, 28]`` or ``[N]``.
    Raises:
        FileNotFoundError: the file does not exist.
        IDXFormatError: wrong magic number, truncated or over-long payload, broken gzip stream.
    """
    path = Path(path)
    raw = _read_bytes(path)
    shape = _parse_header(raw, path, ndim)
    offset = 4 + 4 * len(shape)
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - offset != expected:
        raise IDXFormatError(
            f"{path}: header says shape {shape} ({expected} bytes of data) but the file holds "
            f"{len(raw) - offset} bytes after the header; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()  # writable


def read_idx_shape(path: str | Path, ndim: int | None = None) -> tuple[int, ...]:
    """The shape in an IDX file's header, reading only the header (cheap even for big files)."""
    path = Path(path)
    return _parse_header(_read_bytes(path, 4 + 4 * 255), path, ndim)


def find_idx_file(root: str | Path, stem: str) -> Path | None:
    """``root/stem.gz`` or ``root/stem`` (gzip preferred), or None if neither exists.

    ``stem`` is e.g. ``"t10k-images-idx3-ubyte"``.
    """
    root = Path(root)
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def load_idx_images(images: str | Path, labels: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST-style image/label file pair.

    Returns:
        ``(x, y)``: ``x`` uint8 ``[N, 1, H, W]`` (8-bit grey, 0..255), ``y`` long ``[N]``.
    Raises:
        IDXFormatError: either file is corrupt, or the two disagree on N.
    """
    x = read_idx(images, ndim=3)
    y = read_idx(labels, ndim=1)
    if len(x) != len(y):
        raise IDXFormatError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))
