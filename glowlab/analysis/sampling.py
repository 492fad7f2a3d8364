"""Images from a trained flow: sample grids, temperature rows, latent interpolation, reconstructions.

Temperature: ``T`` multiplies the standard deviation of *every* level's prior, the top prior and
each split's conditional prior (Glow, section 6), so ``T = 0`` decodes every prior's mean and
``T = 1`` samples the model itself; lower ``T`` trades diversity for smoother images. For NICE's
logistic prior ``T`` scales the sampled latent.

The functions take a density (``model``) and the data's ``n_bits``; :func:`sample_to_file` (what
``sample.py`` runs) rebuilds both from a checkpoint with :func:`~glowlab.analysis.loading.load_model`.
All images returned here are ``[N, C, H, W]`` in [0, 1], quantised to the data's ``2**n_bits``
levels (:func:`glowlab.likelihood.to_image`); non-finite samples stay non-finite so
:func:`~glowlab.analysis.grids.save_grid` can count them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from glowlab.analysis.grids import save_grid
from glowlab.analysis.latents import decode_levels, draw, encode_levels
from glowlab.analysis.loading import Trained, check_writable, load_model, run_dir_of, write_json
from glowlab.likelihood import dequantize, to_image

__all__ = [
    "MODES",
    "TEMPERATURES",
    "check_sample_options",
    "interpolate",
    "pick_test_images",
    "reconstruct",
    "sample_grid",
    "sample_to_file",
    "temperature_grid",
]

MODES = ("grid", "temperatures", "interpolate", "reconstruct")
TEMPERATURES = (0.0, 0.25, 0.5, 0.7, 0.85, 1.0)


def _num_classes(model) -> int:
    """Classes of a label-conditioned density, else 0 (the declared ``num_classes``/``context_kind``
    of :class:`~glowlab.core.Density`). A density conditioned on a tensor has no context to draw here."""
    if model.context_kind == "tensor":
        raise ValueError(f"{type(model).__name__} is conditioned on a tensor context [B, {model.context_features}], "
                         f"which these grids cannot choose; sample it with model.sample(n, context=...)")
    return int(model.num_classes)


def _generator(model, seed: int) -> torch.Generator:
    return torch.Generator(device=next(model.parameters()).device).manual_seed(int(seed))


def _positive_int(name: str, value, minimum: int = 1, what: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}= must be an integer >= {minimum}{what}, got {name}={value!r}")


def _temperature(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}= must be a finite number >= 0 (it multiplies the prior's standard deviation: "
                         f"0 decodes the prior means, 1 samples the model), got {name}={value!r}")


def check_sample_options(mode: str = "grid", n: int = 64, temperature: float = 0.7, temperatures=TEMPERATURES,
                         nrow: int | None = None, pairs: int = 4, steps: int = 8) -> None:
    """ValueError naming the option (``n=``, ``temperature=``, ...) for a value ``sample.py`` cannot use."""
    if mode not in MODES:
        raise ValueError(f"mode= must be one of {MODES}, got mode={mode!r}")
    _positive_int("n", n, what=" (the number of samples, or of test images for mode=reconstruct)")
    _temperature("temperature", temperature)
    for t in temperatures:
        _temperature("temperatures", t)
    if nrow is not None:
        _positive_int("nrow", nrow, what=" (images per row), or null for the default")
    _positive_int("pairs", pairs, what=" (rows of mode=interpolate)")
    _positive_int("steps", steps, 2, " (images per interpolation, both endpoints included)")


def sample_grid(model, n_bits: int, n: int = 64, temperature: float = 0.7, nrow: int | None = None,
                seed: int = 0) -> tuple[Tensor, int]:
    """``(images, nrow)``: ``n`` samples at ``temperature``, ``nrow`` per row (default about
    ``sqrt(n)``). A class-conditional model gives one row per class instead, ``nrow`` (default
    ``n // num_classes``) samples of that class each."""
    classes = _num_classes(model)
    device = next(model.parameters()).device
    context = None
    if classes:
        nrow = nrow or max(1, n // classes)
        context = torch.arange(classes, device=device).repeat_interleave(nrow)
        n = len(context)
    else:
        nrow = nrow or math.ceil(math.sqrt(n))
    x = draw(model, n, context, temperature, _generator(model, seed))
    return to_image(x, n_bits).cpu(), nrow


def temperature_grid(model, n_bits: int, temperatures=TEMPERATURES, per_row: int = 8,
                     seed: int = 0) -> tuple[Tensor, int]:
    """``(images, per_row)``: one row of ``per_row`` samples per temperature. Every row uses the
    same seed, so a column shows one latent at each temperature. A conditional model cycles through
    the classes along each row."""
    classes = _num_classes(model)
    device = next(model.parameters()).device
    context = torch.arange(per_row, device=device) % classes if classes else None
    rows = [to_image(draw(model, per_row, context, float(t), _generator(model, seed)), n_bits).cpu()
            for t in temperatures]
    return torch.cat(rows), per_row


@torch.no_grad()
def interpolate(model, x_a: Tensor, x_b: Tensor, steps: int = 8, context_a: Tensor | None = None,
                context_b: Tensor | None = None) -> Tensor:
    """Decode the linear interpolation ``(1 - t) z_a + t z_b`` of every level's latent, for
    ``steps`` values of ``t`` from 0 to 1.

    ``x_a``, ``x_b``: ``[P, C, H, W]`` in model space. Returns ``[P, steps, C, H, W]`` in model
    space; the first and last steps are ``inverse(forward(x))`` of the endpoints, so they equal
    ``x_a`` and ``x_b`` up to the flow's round-trip error. Conditional models decode with
    ``context_a`` for ``t < 0.5`` and ``context_b`` from there on.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two endpoints), got {steps}")
    zs_a = encode_levels(model, x_a, context_a)
    zs_b = encode_levels(model, x_b, context_b)
    frames = []
    for t in torch.linspace(0.0, 1.0, steps).tolist():
        zs = [torch.lerp(a, b, t) for a, b in zip(zs_a, zs_b)]
        frames.append(decode_levels(model, zs, context_a if t < 0.5 else context_b))
    return torch.stack(frames, dim=1)


@torch.no_grad()
def reconstruct(model, x: Tensor, context: Tensor | None = None) -> Tensor:
    """``inverse(forward(x))``, ``[B, C, H, W]`` in model space: ``x`` up to the round-trip error."""
    return decode_levels(model, encode_levels(model, x, context), context)


def pick_test_images(dataset, count: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``count`` images of ``dataset`` (items ``(uint8 [C, H, W], label)``) drawn at random with
    ``seed``: ``(x_int [count, C, H, W], labels [count], indices [count])``; fewer when it is smaller."""
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(int(seed)))[:count]
    items = [dataset[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items]), idx


def _test_images(trained: Trained, count: int, seed: int):
    """``(x in model space (bin centres), context or None, indices)`` of ``count`` random test images."""
    x_int, y, idx = pick_test_images(trained.datamodule("test").test_dataset, count, seed)
    x = dequantize(x_int.to(trained.device), trained.n_bits, noise=False)
    return x, (y.to(trained.device) if trained.num_classes else None), idx


def _real_pairs(trained: Trained, pairs: int, steps: int, seed: int) -> tuple[Tensor, dict]:
    """Interpolations between ``pairs`` pairs of test images: ``[pairs * steps, C, H, W]`` in [0, 1]."""
    x, context, idx = _test_images(trained, 2 * pairs, seed)
    pairs = len(idx) // 2
    x, idx = x[: 2 * pairs], idx[: 2 * pairs]
    ca, cb = (context[:pairs], context[pairs: 2 * pairs]) if context is not None else (None, None)
    path = interpolate(trained.model, x[:pairs], x[pairs:], steps, ca, cb)
    err = max((path[:, 0] - x[:pairs]).abs().max().item(), (path[:, -1] - x[pairs:]).abs().max().item())
    info = {"pairs": pairs, "steps": steps, "test_indices": idx.tolist(), "endpoint_max_abs_error": err}
    return to_image(path.flatten(0, 1), trained.n_bits).cpu(), info


def _real_vs_reconstructed(trained: Trained, n: int, per_row: int, seed: int) -> tuple[Tensor, dict]:
    """Rows of real test images, each followed by a row of their reconstructions."""
    x, context, idx = _test_images(trained, n, seed)
    keep = max(1, len(idx) // per_row) * per_row
    x, idx = x[:keep], idx[:keep]
    context = context[:keep] if context is not None else None
    rec = reconstruct(trained.model, x, context)
    real_img, rec_img = to_image(x, trained.n_bits), to_image(rec, trained.n_bits)
    grid = torch.stack([real_img.unflatten(0, (-1, per_row)), rec_img.unflatten(0, (-1, per_row))], 1)
    info = {"images": len(idx), "test_indices": idx.tolist(), "max_abs_error": (rec - x).abs().max().item(),
            "pixels_changed": int((real_img != rec_img).sum())}
    return grid.flatten(0, 2).cpu(), info


def sample_to_file(ckpt_path: str | Path, mode: str = "grid", n: int = 64, temperature: float = 0.7,
                   temperatures=TEMPERATURES, nrow: int | None = None, pairs: int = 4, steps: int = 8,
                   seed: int = 0, out: str | Path | None = None, device: str | None = "cpu",
                   data: dict | None = None, min_width: int = 256) -> dict:
    """Write one PNG grid (1 pixel padding; enlarged to at least ``min_width`` pixels with the raw
    grid kept as ``<stem>_raw.png``, see :func:`~glowlab.analysis.grids.save_grid`) and a JSON
    sidecar with the same stem; return the sidecar's content.

    Modes: ``grid`` (``n`` samples at ``temperature``), ``temperatures`` (one row of ``nrow``
    (default 8) samples per temperature), ``interpolate`` (``pairs`` rows of ``steps`` images
    between two random test images, endpoints included), ``reconstruct`` (rows of ``nrow`` real
    test images, each followed by their ``inverse(forward(x))``). ``out`` defaults to
    ``RUN/samples/<mode>_seed<seed>.png`` next to the checkpoint's run. ``data`` overrides the
    checkpoint's data config (test images for interpolate/reconstruct).

    Raises:
        ValueError: an option out of range (named, e.g. ``n=``), before anything is loaded.
        OSError: the output folder is not writable (naming ``out=``), before anything is computed.
    """
    check_sample_options(mode, n, temperature, temperatures, nrow, pairs, steps)
    stem = f"{mode}_seed{seed}" + (f"_t{temperature:g}" if mode == "grid" else "")
    png = Path(out).resolve() if out else run_dir_of(ckpt_path) / "samples" / f"{stem}.png"
    check_writable(png, "out=")
    torch.manual_seed(int(seed))
    trained = load_model(ckpt_path, data, device)
    model, info = trained.model, {}
    if mode == "grid":
        images, per_row = sample_grid(model, trained.n_bits, n, temperature, nrow, seed)
        info["temperature"] = float(temperature)
    elif mode == "temperatures":
        images, per_row = temperature_grid(model, trained.n_bits, temperatures, nrow or 8, seed)
        info["temperatures"] = [float(t) for t in temperatures]
    elif mode == "interpolate":
        images, info = _real_pairs(trained, pairs, steps, seed)
        per_row = steps
    else:
        per_row = nrow or 8
        images, info = _real_vs_reconstructed(trained, n, per_row, seed)
    grid = save_grid(images, png, nrow=per_row, min_width=min_width)
    info.update(grid, mode=mode, ckpt_path=str(trained.ckpt_path), seed=int(seed), num_images=len(images),
                image_shape=list(trained.image_shape), n_bits=trained.n_bits, ema_weights=trained.ema,
                class_conditional=trained.num_classes > 0)
    write_json(png.with_suffix(".json"), info)
    return info
