"""``sample.py mode=directions`` and ``mode=manipulate``: attribute directions of a trained model
over its training set, saved next to the checkpoint, and grids of edited test images.

* :func:`compute_directions`: one pass over the training split (the model's own preprocessing,
  no random flips; images at their bin centres), encoding each image once for all the attributes
  asked for, and accumulating the mean latent of every level on each side of each attribute
  (:mod:`glowlab.analysis.manipulation`). Saved to ``<ckpt dir>/<ckpt stem>_directions.pt`` with
  the SHA-256 of the checkpoint, so the directions are never used with another model, and a JSON
  summary beside it.
* :func:`manipulate_to_file`: ``rows`` random test images, half without the attribute and half
  with it, one per row, edited with ``alpha_steps`` values of alpha from -1 to 1 (alpha = 0, the
  middle column, reconstructs the image). A JSON sidecar holds the settings and the
  reconstruction error at alpha = 0.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from glowlab.analysis.attributes import resolve_attribute
from glowlab.analysis.grids import save_grid
from glowlab.analysis.latents import encode_levels
from glowlab.analysis.loading import Trained, check_writable, load_model, run_dir_of, write_json
from glowlab.analysis.manipulation import LatentMean, check_levels, direction_norms, manipulate
from glowlab.likelihood import dequantize, to_image

__all__ = ["EDIT_MODES", "compute_directions", "directions_path", "load_directions", "manipulate_to_file"]

EDIT_MODES = ("directions", "manipulate")
FORMAT = 1


def directions_path(ckpt_path: str | Path) -> Path:
    """``<ckpt dir>/<ckpt stem>_directions.pt``, the default directions file of a checkpoint."""
    ckpt_path = Path(ckpt_path).resolve()
    return ckpt_path.with_name(f"{ckpt_path.stem}_directions.pt")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_directions(path: str | Path, ckpt_path: str | Path | None = None) -> dict:
    """The directions file's content, ``{"ckpt_sha256", "attributes": {name: entry}}``; an entry has
    ``direction`` (one tensor per level), ``count_with``, ``count_without``, ``unknown``, ``norms``.
    With ``ckpt_path``, the attributes are dropped unless the file was made from that checkpoint."""
    path = Path(path)
    if not path.is_file():
        return {"format": FORMAT, "attributes": {}}
    store = torch.load(path, map_location="cpu", weights_only=True)
    if store.get("format") != FORMAT:
        raise ValueError(f"{path} is not a glowlab directions file (format {FORMAT}); delete it or pass directions=")
    if ckpt_path is not None and store.get("ckpt_sha256") != _sha256(Path(ckpt_path)):
        store["attributes"] = {}
    return store


class _Positions(Dataset):
    """Items ``(x_int, y, position)`` of a dataset."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i


def _model_input(trained: Trained, x_int, y):
    x = dequantize(x_int.to(trained.device), trained.n_bits, noise=False)
    return x, (y.to(trained.device) if trained.num_classes else None)


@torch.no_grad()
def _side_means(trained: Trained, dataset, attributes, limit, batch_size) -> list[dict]:
    """Per attribute, ``{"with": LatentMean, "without": LatentMean, "unknown": int}`` over ``dataset``,
    at most ``limit`` images a side; every image is encoded once, when some attribute needs it."""
    acc = [{"with": LatentMean(), "without": LatentMean(), "unknown": 0} for _ in attributes]
    cap = float("inf") if limit is None else int(limit)
    for x_int, y, pos in DataLoader(_Positions(dataset), batch_size=batch_size):
        values = [a(x_int, y, pos) for a in attributes]
        take = []
        for v, a in zip(values, acc):
            room = {1: cap - a["with"].count, 0: cap - a["without"].count}
            keep = torch.zeros_like(v, dtype=torch.bool)
            for side, left in room.items():
                rows = (v == side).nonzero().flatten()
                keep[rows[: int(min(left, len(rows)))]] = True
            a["unknown"] += int((v < 0).sum())
            take.append(keep)
        need = torch.stack(take).any(0)
        if not need.any():
            if all(a["with"].count >= cap and a["without"].count >= cap for a in acc):
                break
            continue
        zs = encode_levels(trained.model, *_model_input(trained, x_int[need], y[need]))
        where = need.nonzero().flatten()
        for v, keep, a in zip(values, take, acc):
            for side, name in ((1, "with"), (0, "without")):
                sel = (keep & (v == side))[where]
                a[name].add([z[sel] for z in zs])
    return acc


def compute_directions(ckpt_path: str | Path, attributes, limit: int | None = None, batch_size: int = 256,
                       directions: str | Path | None = None, device: str | None = "cpu", data: dict | None = None,
                       attributes_csv: str | Path | None = None) -> dict:
    """Compute and save the direction of every attribute in ``attributes`` (a name or a list).

    Returns ``{"path", "json", "attributes": {name: {"count_with", "count_without", "unknown",
    "norms", "definition"}}}`` (what the command prints). ``directions`` is the file (default
    :func:`directions_path`); existing directions of the same checkpoint are kept.

    Raises:
        ValueError: an unknown attribute (listing the valid ones), ``class:K`` on unlabelled data, or
            an attribute with no training image on one side.
        OSError: the directions file cannot be written (checked before any computation).
    """
    names = [attributes] if isinstance(attributes, str) else list(attributes or [])
    if not names:
        raise ValueError("attribute= is required: class:K, a CelebA attribute (e.g. Smiling), a column of "
                         "attributes_csv=FILE, or mass:T; a list [a,b] for several")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit= must be a positive integer (training images per side) or null, got limit={limit!r}")
    path = Path(directions).resolve() if directions else directions_path(ckpt_path)
    check_writable(path, "directions=")
    trained = load_model(ckpt_path, {**(data or {}), "hflip": False}, device)
    dataset = trained.datamodule("fit").train_dataset
    resolved = [resolve_attribute(n, dataset, trained.data_config, "train", trained.datamodule().num_classes,
                                  trained.n_bits, attributes_csv) for n in names]
    store = load_directions(path, ckpt_path)
    report = {}
    for a, acc in zip(resolved, _side_means(trained, dataset, resolved, limit, batch_size)):
        counts = {"count_with": acc["with"].count, "count_without": acc["without"].count, "unknown": acc["unknown"]}
        if not counts["count_with"] or not counts["count_without"]:
            side = "with" if not counts["count_with"] else "without"
            raise ValueError(f"attribute={a.name!r} has no training image {side} it ({counts['count_with']} with, "
                             f"{counts['count_without']} without, {counts['unknown']} unknown, among "
                             f"{len(dataset)}); a direction needs both sides: pick another attribute or threshold")
        direction = [(m1 - m0).float() for m1, m0 in zip(acc["with"].mean(), acc["without"].mean())]
        entry = {**counts, "norms": direction_norms(direction), "definition": a.definition, "limit": limit}
        store["attributes"][a.name] = {**entry, "direction": direction}
        report[a.name] = entry
    store.update(format=FORMAT, ckpt_sha256=_sha256(trained.ckpt_path), ckpt_path=str(trained.ckpt_path),
                 split="train", num_images=len(dataset))
    torch.save(store, path)
    summary = {n: {k: v for k, v in e.items() if k != "direction"} for n, e in store["attributes"].items()}
    json_path = write_json(path.with_suffix(".json"), {"ckpt_path": str(trained.ckpt_path), "attributes": summary})
    return {"path": str(path), "json": str(json_path), "attributes": report}


def _pick_rows(trained: Trained, attribute, rows: int, seed: int, batch_size: int):
    """``rows`` random test images, the first half without the attribute and the rest with it."""
    dataset = trained.datamodule("test").test_dataset
    want = {0: rows // 2, 1: rows - rows // 2}
    got = {0: [], 1: []}
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(int(seed)))
    for x_int, y, pos in DataLoader(_Positions(Subset(dataset, order.tolist())), batch_size=batch_size):
        v = attribute(x_int, y, order[pos])
        for side in (0, 1):
            for i in (v == side).nonzero().flatten()[: want[side] - len(got[side])].tolist():
                got[side].append((x_int[i], y[i], int(order[pos[i]]), side))
        if all(len(got[s]) >= want[s] for s in (0, 1)):
            break
    picked = got[0] + got[1]
    if not picked:
        raise ValueError(f"no test image has a known value of attribute={attribute.name!r}")
    x_int, y, idx, side = zip(*picked)
    return torch.stack(x_int), torch.stack(y), list(idx), list(side)


def manipulate_to_file(ckpt_path: str | Path, attribute: str, levels=None, rows: int = 8, alpha_steps: int = 7,
                       seed: int = 0, out: str | Path | None = None, directions: str | Path | None = None,
                       limit: int | None = None, batch_size: int = 256, device: str | None = "cpu",
                       data: dict | None = None, attributes_csv: str | Path | None = None,
                       min_width: int = 256) -> dict:
    """Write the grid of edited test images (rows: images; columns: alpha from -1 to 1) and its JSON
    sidecar; return the sidecar's content. The direction comes from the directions file when it
    holds ``attribute`` for this checkpoint, else it is computed (and saved) first."""
    if not isinstance(attribute, str):
        raise ValueError(f"mode=manipulate edits one attribute at a time, got attribute={attribute!r}")
    if isinstance(alpha_steps, bool) or not isinstance(alpha_steps, int) or alpha_steps < 3 or alpha_steps % 2 == 0:
        raise ValueError(f"alpha_steps= must be an odd integer >= 3 (so that alpha = 0, the reconstruction, is a "
                         f"column), got alpha_steps={alpha_steps!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows= must be a positive integer (test images), got rows={rows!r}")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in attribute)
    png = Path(out).resolve() if out else run_dir_of(ckpt_path) / "samples" / f"manipulate_{safe}_seed{seed}.png"
    check_writable(png, "out=")
    path = Path(directions).resolve() if directions else directions_path(ckpt_path)
    store = load_directions(path, ckpt_path)
    report = None
    if attribute not in store["attributes"]:
        report = compute_directions(ckpt_path, attribute, limit, batch_size, path, device, data, attributes_csv)
        store = load_directions(path)
    entry = store["attributes"][attribute]
    trained = load_model(ckpt_path, data, device)
    test_attr = resolve_attribute(attribute, trained.datamodule("test").test_dataset, trained.data_config, "test",
                                  trained.datamodule().num_classes, trained.n_bits, attributes_csv)
    x_int, y, idx, sides = _pick_rows(trained, test_attr, rows, seed, batch_size)
    x, context = _model_input(trained, x_int, y)
    edit_levels = check_levels(levels if levels is None or isinstance(levels, int) else list(levels),
                               len(entry["direction"]))
    alphas = [2.0 * i / (alpha_steps - 1) - 1.0 for i in range(alpha_steps)]  # the middle one is exactly 0
    edits = manipulate(trained.model, x, [d.to(x) for d in entry["direction"]], alphas, edit_levels, context)
    images = to_image(edits.flatten(0, 1), trained.n_bits).cpu()
    rec = edits[:, alpha_steps // 2]
    info = save_grid(images, png, nrow=alpha_steps, min_width=min_width)
    info.update(mode="manipulate", attribute=attribute, definition=entry["definition"], alphas=alphas,
                levels=edit_levels, num_levels=len(entry["direction"]), seed=int(seed), test_indices=idx,
                row_has_attribute=sides, directions=str(path), computed_directions=report is not None,
                count_with=entry["count_with"], count_without=entry["count_without"], norms=entry["norms"],
                reconstruction_max_abs_error=float((rec - x).abs().max()),
                reconstruction_pixels_changed=int((to_image(rec, trained.n_bits) != to_image(x, trained.n_bits)).sum()),
                ckpt_path=str(trained.ckpt_path), image_shape=list(trained.image_shape), n_bits=trained.n_bits)
    write_json(png.with_suffix(".json"), info)
    return info
