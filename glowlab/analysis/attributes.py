"""Binary attributes of dataset images, for latent directions (``sample.py mode=directions``).

An attribute is named by a string, the ``attribute=`` option:

* ``class:K``: the image's class label is ``K`` (any labelled dataset: "digit 7 against the rest").
* a CelebA attribute name, e.g. ``Smiling``: read from ``ROOT/celeba/list_attr_celeba.txt`` (the
  file torchvision returns with ``target_type="attr"``), aligned with the split through
  ``list_eval_partition.txt`` as torchvision orders it.
* a column of a CSV of per-image attributes (``image_folder``, or any dataset whose images are
  files): ``attributes_csv=PATH``, by default ``<data.root>/attributes.csv``. The first column,
  ``file``, holds each image's path relative to ``data.root`` (``train/cats/001.png``), relative
  to its split folder (``cats/001.png``), or its bare file name when names are unique; the other
  columns hold ``1``/``0`` (or ``1``/``-1``, ``true``/``false``; empty: unknown).
* ``mass:T``: the image's mean pixel value, as a fraction of the largest value ``2**n_bits - 1``,
  exceeds ``T`` ("thick against thin strokes" on digits; MNIST digits average about 0.13).

:func:`resolve_attribute` returns an :class:`Attribute` for one split of a data module: called on a
batch ``(x_int, y, positions)`` it gives ``1`` (with), ``0`` (without) or ``-1`` (unknown) per image.

Example:
    >>> import torch
    >>> a = resolve_attribute("class:3", dataset=None, data_config={"dataset": "digits"}, split="train",
    ...                       num_classes=10, n_bits=5)
    >>> a(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([3, 1, 3, 0]), torch.arange(4)).tolist()
    [1, 0, 1, 0]
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["Attribute", "read_attribute_csv", "read_celeba_attributes", "resolve_attribute"]

CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}
_TRUE, _FALSE = {"1", "true", "yes", "y", "t"}, {"0", "-1", "false", "no", "n", "f"}


@dataclass
class Attribute:
    """A binary attribute of the images of one split.

    ``name`` is the spec as given; ``definition`` says how it is computed (for reports);
    calling it with ``(x_int [B, C, H, W], y [B], positions [B])`` (positions within the split's
    dataset) returns an int8 tensor ``[B]`` of ``1`` (with), ``0`` (without) or ``-1`` (unknown).
    """

    name: str
    definition: str
    fn: Callable[[Tensor, Tensor, Tensor], Tensor]

    def __call__(self, x_int: Tensor, y: Tensor, positions: Tensor) -> Tensor:
        return self.fn(x_int, y, positions).to(torch.int8)


def read_celeba_attributes(root: str | Path, split: str) -> tuple[list[str], Tensor]:
    """``(names, values int8 [N, 40] of 1/0)`` of CelebA's split ``train``/``valid``/``test``, rows
    in torchvision's order for that split. ``root`` is the folder holding ``celeba/``."""
    folder = Path(root) / "celeba"
    attr_file, part_file = folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"
    for f in (attr_file, part_file):
        if not f.is_file():
            raise FileNotFoundError(f"CelebA attributes need {f} (torchvision's CelebA layout under data.root)")
    lines = attr_file.read_text().splitlines()
    names = lines[1].split()
    rows = {}
    for line in lines[2:]:
        parts = line.split()
        if parts:
            rows[parts[0]] = [1 if v == "1" else 0 for v in parts[1:]]
    wanted = CELEBA_SPLITS[split]
    files = [p[0] for p in (ln.split() for ln in part_file.read_text().splitlines()) if p and int(p[1]) == wanted]
    return names, torch.tensor([rows[f] for f in files], dtype=torch.int8).view(len(files), len(names))


def _split_files(dataset) -> tuple[list[Path], Path]:
    """The image files of a data module's split, in dataset order, and their split folder."""
    base = getattr(dataset, "base", dataset)
    images = getattr(base, "base", base)  # PILImages wraps an ImageFolder or a FlatImageFolder
    if hasattr(images, "samples"):
        return [Path(p) for p, _ in images.samples], Path(images.root)
    if hasattr(images, "files"):
        return list(images.files), Path(images.folder)
    raise ValueError("attributes_csv needs a dataset of image files (image_folder); this one holds tensors")


def read_attribute_csv(path: str | Path, files: list[Path], split_folder: Path,
                       data_root: Path) -> tuple[list[str], Tensor]:
    """``(column names, values int8 [len(files), K] of 1/0/-1)``: the CSV's rows matched to ``files``
    (see the module docstring for the format); files without a row get -1."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or len(header) < 2:
            raise ValueError(f"{path}: the first row must be `file,<attribute>,...`, got {header}")
        table = {}
        for n, row in enumerate(reader, start=2):
            values = []
            for name, v in zip(header[1:], row[1:]):
                v = v.strip().lower()
                if v not in _TRUE | _FALSE | {""}:
                    raise ValueError(f"{path} line {n}: {name}={v!r} is not 1/0, 1/-1, true/false or empty")
                values.append(1 if v in _TRUE else 0 if v in _FALSE else -1)
            table[row[0].strip().replace("\\", "/")] = values + [-1] * (len(header) - 1 - len(values))
    names = [h.strip() for h in header[1:]]
    base_names = [Path(k).name for k in table]
    unique = {k: table[k] for k in table if base_names.count(Path(k).name) == 1}
    by_name = {Path(k).name: v for k, v in unique.items()}
    missing = [-1] * len(names)
    out = []
    for file in files:
        keys = [file.relative_to(root).as_posix() for root in (data_root, split_folder) if file.is_relative_to(root)]
        row = next((table[k] for k in keys if k in table), None)
        out.append(row if row is not None else by_name.get(file.name, missing))
    return names, torch.tensor(out, dtype=torch.int8).view(len(files), len(names))


def _positions_to_base(dataset) -> Tensor | None:
    """Indices into the split's underlying dataset of each position (TransformedSubset), or None."""
    indices = getattr(dataset, "indices", None)
    return torch.as_tensor(indices).long() if indices is not None else None


def _table_attribute(spec: str, column: int, table: Tensor, dataset, definition: str) -> Attribute:
    base_of = _positions_to_base(dataset)

    def fn(x_int, y, positions):
        rows = base_of[positions] if base_of is not None else positions
        return table[rows, column]

    return Attribute(spec, definition, fn)


def _unknown(spec: str, options: list[str], why: str = "") -> ValueError:
    close = difflib.get_close_matches(spec, options, n=1)
    hint = f"; did you mean attribute={close[0]}?" if close else ""
    return ValueError(f"unknown attribute={spec!r}{why}. Valid here: {', '.join(options)}{hint}")


def resolve_attribute(spec: str, dataset, data_config, split: str, num_classes: int, n_bits: int,
                      csv_path: str | Path | None = None) -> Attribute:
    """The :class:`Attribute` named ``spec`` for split ``split`` (``train``/``test``) of ``dataset``.

    Args:
        dataset: the data module's split (a ``TransformedSubset``: positions map to its ``indices``).
        data_config: the data module's config (``dataset``, ``root``).
        num_classes: of the dataset, 0 when unlabelled.
        n_bits: of the images ``x_int`` (for ``mass:T``).
        csv_path: a CSV of per-image attributes; default ``<root>/attributes.csv`` when it exists.
    Raises:
        ValueError: an unknown attribute, listing the valid ones; ``class:K`` on unlabelled data.
    """
    spec = str(spec).strip()
    name, root = str(data_config["dataset"]), Path(str(data_config.get("root", ".")))
    options = [f"class:0..class:{num_classes - 1}"] if num_classes else []
    options.append("mass:T (0 < T < 1)")
    if spec.startswith("class:"):
        if not num_classes:
            raise ValueError(f"attribute={spec!r}: dataset {name} has no class labels; use a per-image attribute "
                             f"({'CelebA names, ' if name == 'celeba' else ''}a column of attributes_csv=FILE, "
                             f"or mass:T)")
        k = spec[len("class:"):]
        if not k.lstrip("-").isdigit() or not 0 <= int(k) < num_classes:
            raise ValueError(f"attribute={spec!r}: the classes of {name} are class:0 to class:{num_classes - 1}")
        k = int(k)
        return Attribute(spec, f"class label == {k} (with) against every other class (without)",
                         lambda x, y, p: (y == k).to(torch.int8))
    if spec.startswith("mass:"):
        try:
            t = float(spec[len("mass:"):])
        except ValueError:
            t = float("nan")
        if not 0 < t < 1:
            raise ValueError(f"attribute={spec!r}: mass:T needs a threshold 0 < T < 1 on the mean pixel value "
                             f"(a fraction of the largest value), e.g. mass:0.15")
        top = 2**n_bits - 1
        return Attribute(spec, f"mean pixel value / {top} > {t:g} (with) or <= {t:g} (without)",
                         lambda x, y, p: (x.float().flatten(1).mean(1) / top > t).to(torch.int8))
    if name == "celeba":
        names, table = read_celeba_attributes(root, split)
        if spec in names:
            return _table_attribute(spec, names.index(spec), table, dataset,
                                    f"CelebA attribute {spec} == 1 (with) or -1 (without)")
        options += names
    csv_file = Path(csv_path) if csv_path else root / "attributes.csv"
    if csv_path and not csv_file.is_file():
        raise FileNotFoundError(f"attributes_csv={csv_path}: no such file")
    if csv_file.is_file():
        files, folder = _split_files(dataset)
        names, table = read_attribute_csv(csv_file, files, folder, root)
        if spec in names:
            return _table_attribute(spec, names.index(spec), table, dataset,
                                    f"column {spec} of {csv_file} == 1 (with) or 0 (without)")
        options += names
    why = "" if csv_file.is_file() or name == "celeba" else f" (no CSV of attributes: {csv_file} does not exist)"
    raise _unknown(spec, options, why)
