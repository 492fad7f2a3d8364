"""Images from a trained flow: sample grids, temperature rows, latent interpolation, reconstructions.

Temperature: ``T`` multiplies the standard deviation of *every* level's prior, the top prior and
each split's conditional prior (Glow, section 6), so ``T = 0`` decodes every prior's mean and
``T = 1`` samples the model itself; lower ``T`` trades diversity for smoother images. For NICE's
logistic prior ``T`` scales the sampled latent.

All images returned here are ``[N, C, H, W]`` in [0, 1], quantised to the data's ``2**n_bits``
levels (:func:`glowlab.likelihood.to_image`); non-finite samples stay non-finite so
:func:`write_grid` can count them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from glowlab.analysis.loading import inference_weights, load_trained, run_dir_of, write_json
from glowlab.likelihood import dequantize, to_image
from glowlab.training.callbacks import save_sample_grid
from glowlab.training.module import FlowModule
from glowlab.training.run import build_datamodule

__all__ = ["MODES", "TEMPERATURES", "sample_grid", "temperature_grid", "interpolate", "reconstruct",
           "pick_test_images", "sample_to_file"]

MODES = ("grid", "temperatures", "interpolate", "reconstruct")
TEMPERATURES = (0.0, 0.25, 0.5, 0.7, 0.85, 1.0)


def _generator(module: FlowModule, seed: int) -> torch.Generator:
    return torch.Generator(device=module.device).manual_seed(int(seed))


def _num_classes(model) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def sample_grid(module: FlowModule, n: int = 64, temperature: float = 0.7, nrow: int | None = None,
                seed: int = 0) -> tuple[Tensor, int]:
    """``(images, nrow)``: ``n`` samples at ``temperature``, ``nrow`` per row (default about
    ``sqrt(n)``). A class-conditional model gives one row per class instead, ``nrow`` (default
    ``n // num_classes``) samples of that class each."""
    classes = _num_classes(module.model)
    cond = None
    if classes:
        nrow = nrow or max(1, n // classes)
        cond = torch.arange(classes, device=module.device).repeat_interleave(nrow)
        n = len(cond)
    else:
        nrow = nrow or math.ceil(math.sqrt(n))
    return module.sample_images(n, temperature, cond, generator=_generator(module, seed)).cpu(), nrow


def temperature_grid(module: FlowModule, temperatures=TEMPERATURES, per_row: int = 8,
                     seed: int = 0) -> tuple[Tensor, int]:
    """``(images, per_row)``: one row of ``per_row`` samples per temperature. Every row uses the
    same noise (the generator is reseeded), so a column shows one latent at each temperature.
    A conditional model cycles through the classes along each row."""
    classes = _num_classes(module.model)
    cond = torch.arange(per_row, device=module.device) % classes if classes else None
    rows = [module.sample_images(per_row, float(t), cond, generator=_generator(module, seed)).cpu()
            for t in temperatures]
    return torch.cat(rows), per_row


@torch.no_grad()
def interpolate(model, x_a: Tensor, x_b: Tensor, steps: int = 8, cond_a: Tensor | None = None,
                cond_b: Tensor | None = None) -> Tensor:
    """Decode the linear interpolation ``(1 - t) z_a + t z_b`` of every level's latent, for
    ``steps`` values of ``t`` from 0 to 1.

    ``x_a``, ``x_b``: ``[P, C, H, W]`` in model space. Returns ``[P, steps, C, H, W]`` in model
    space; the first and last steps are ``inverse(forward(x))`` of the endpoints, so they equal
    ``x_a`` and ``x_b`` up to the flow's round-trip error. Conditional models decode with
    ``cond_a`` for ``t < 0.5`` and ``cond_b`` from there on.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two endpoints), got {steps}")
    zs_a, _ = model(x_a, cond_a)
    zs_b, _ = model(x_b, cond_b)
    frames = []
    for t in torch.linspace(0.0, 1.0, steps).tolist():
        zs = [torch.lerp(a, b, t) for a, b in zip(zs_a, zs_b)]
        frames.append(model.inverse(zs, cond_a if t < 0.5 else cond_b))
    return torch.stack(frames, dim=1)


@torch.no_grad()
def reconstruct(model, x: Tensor, cond: Tensor | None = None) -> Tensor:
    """``inverse(forward(x))``, ``[B, C, H, W]`` in model space: ``x`` up to the round-trip error."""
    zs, _ = model(x, cond)
    return model.inverse(zs, cond)


def pick_test_images(data_config, image_shape, count: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``count`` test-split images drawn at random with ``seed``: ``(x_int uint8 [count, C, H, W],
    labels [count], indices [count])``; fewer when the split is smaller."""
    dm = build_datamodule(data_config, image_shape)
    dm.setup("test")
    ds = dm.test_dataset
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(int(seed)))[:count]
    items = [ds[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items]), idx


def _real_pairs(module: FlowModule, data_config, pairs: int, steps: int, seed: int) -> tuple[Tensor, dict]:
    """Interpolations between ``pairs`` pairs of test images: ``[pairs * steps, C, H, W]`` in [0, 1]."""
    x_int, y, idx = pick_test_images(data_config, module.model.image_shape, 2 * pairs, seed)
    pairs = len(idx) // 2
    x = dequantize(x_int[: 2 * pairs].to(module.device), module.n_bits, noise=False)  # bin centres
    cond = y[: 2 * pairs].to(module.device) if _num_classes(module.model) else None
    ca, cb = (cond[:pairs], cond[pairs:]) if cond is not None else (None, None)
    with inference_weights(module) as model:
        path = interpolate(model, x[:pairs], x[pairs:], steps, ca, cb)
    err = max((path[:, 0] - x[:pairs]).abs().max().item(), (path[:, -1] - x[pairs:]).abs().max().item())
    info = {"pairs": pairs, "steps": steps, "test_indices": idx[: 2 * pairs].tolist(),
            "endpoint_max_abs_error": err}
    return to_image(path.flatten(0, 1), module.n_bits).cpu(), info


def _real_vs_reconstructed(module: FlowModule, data_config, n: int, per_row: int, seed: int) -> tuple[Tensor, dict]:
    """Rows of real test images, each followed by a row of their reconstructions."""
    x_int, y, idx = pick_test_images(data_config, module.model.image_shape, n, seed)
    rows = max(1, len(idx) // per_row)
    x_int, y, idx = x_int[: rows * per_row], y[: rows * per_row], idx[: rows * per_row]
    x = dequantize(x_int.to(module.device), module.n_bits, noise=False)
    cond = y.to(module.device) if _num_classes(module.model) else None
    with inference_weights(module) as model:
        rec = reconstruct(model, x, cond)
    real_img, rec_img = to_image(x, module.n_bits), to_image(rec, module.n_bits)
    grid = torch.stack([real_img.unflatten(0, (-1, per_row)), rec_img.unflatten(0, (-1, per_row))], 1)
    info = {"images": len(idx), "test_indices": idx.tolist(), "max_abs_error": (rec - x).abs().max().item(),
            "pixels_changed": int((real_img != rec_img).sum())}
    return grid.flatten(0, 2).cpu(), info


def sample_to_file(ckpt_path: str | Path, mode: str = "grid", n: int = 64, temperature: float = 0.7,
                   temperatures=TEMPERATURES, nrow: int | None = None, pairs: int = 4, steps: int = 8,
                   seed: int = 0, out: str | Path | None = None, device: str | None = "cpu",
                   data: dict | None = None) -> dict:
    """Write one PNG grid (torchvision ``save_image``, 1 pixel padding) and a JSON sidecar with
    the same stem; return the sidecar's content.

    Modes: ``grid`` (``n`` samples at ``temperature``), ``temperatures`` (one row of ``nrow``
    (default 8) samples per temperature), ``interpolate`` (``pairs`` rows of ``steps`` images
    between two random test images, endpoints included), ``reconstruct`` (rows of ``nrow`` real
    test images, each followed by their ``inverse(forward(x))``). ``out`` defaults to
    ``RUN/samples/<mode>_seed<seed>.png`` next to the checkpoint's run. ``data`` overrides the
    checkpoint's data config (test images for interpolate/reconstruct).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    torch.manual_seed(int(seed))
    module, data_config = load_trained(ckpt_path, data, device)
    info: dict = {}
    if mode == "grid":
        images, per_row = sample_grid(module, n, temperature, nrow, seed)
        info["temperature"] = float(temperature)
    elif mode == "temperatures":
        images, per_row = temperature_grid(module, temperatures, nrow or 8, seed)
        info["temperatures"] = [float(t) for t in temperatures]
    elif mode == "interpolate":
        images, info = _real_pairs(module, data_config, pairs, steps, seed)
        per_row = steps
    else:
        per_row = nrow or 8
        images, info = _real_vs_reconstructed(module, data_config, n, per_row, seed)
    stem = f"{mode}_seed{seed}" + (f"_t{temperature:g}" if mode == "grid" else "")
    png = Path(out).resolve() if out else run_dir_of(ckpt_path) / "samples" / f"{stem}.png"
    non_finite = save_sample_grid(images, png, nrow=per_row)
    info.update(mode=mode, ckpt_path=str(Path(ckpt_path).resolve()), seed=int(seed), nrow=per_row,
                rows=math.ceil(len(images) / per_row), num_images=len(images), non_finite=non_finite,
                image_shape=list(module.model.image_shape), n_bits=module.n_bits, png=str(png),
                class_conditional=_num_classes(module.model) > 0)
    write_json(png.with_suffix(".json"), info)
    return info
