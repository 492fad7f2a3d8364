"""Reading checkpoints safely: the state-dict checksum, and what a damaged, old or mismatched
checkpoint is told. Needs neither Lightning nor Hydra (the analysis tools use it).

:func:`state_dict_checksum` is what :class:`glowlab.training.checkpointing.AtomicCheckpointIO`
stores under :data:`CHECKSUM_KEY` when it writes a checkpoint; :func:`verify_checksum` compares
it on load (:func:`glowlab.training.config.load_checkpoint`), so flipped bits in the tensor data
are reported instead of loading silently.

Example:
    >>> import torch
    >>> a = state_dict_checksum({"w": torch.zeros(2)})
    >>> a == state_dict_checksum({"w": torch.zeros(2)}), a == state_dict_checksum({"w": torch.tensor([0.0, 1e-45])})
    (True, False)
"""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from typing import Any

import torch

__all__ = [
    "CHECKSUM_KEY",
    "DATA_KEYS_OF_THE_MODEL",
    "RUNTIME_MODEL_KEYS",
    "VERSION_KEY",
    "CheckpointError",
    "check_data_overrides",
    "check_initialized_flags",
    "check_resume_model_config",
    "explain_load_errors",
    "model_config_differences",
    "state_dict_checksum",
    "stored_data_config",
    "verify_checksum",
]

CHECKSUM_KEY = "glowlab_state_dict_sha256"
VERSION_KEY = "glowlab_version"


def state_dict_checksum(state_dict: dict[str, Any]) -> str:
    """SHA-256 (hex) of a state dict: every entry's name, dtype, shape and raw bytes, in name order.

    Any changed bit of any tensor changes it; tensors are read on the CPU. Non-tensor entries
    count by their ``repr``.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        h.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}\0".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode() + b"\0")
    return h.hexdigest()


# -- reading: what a damaged, old or mismatched checkpoint is told ---------------------------------

class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, is damaged, or does not fit this run."""


def _written_by(ckpt: dict) -> str:
    version = ckpt.get(VERSION_KEY)
    return f"written by glowlab {version}" if version else "written by an older glowlab that recorded no version"


def verify_checksum(ckpt: dict, path) -> None:
    """Raise :class:`CheckpointError` when the state dict's checksum differs from the stored one
    (checkpoints without one, from older versions, pass)."""
    stored = ckpt.get(CHECKSUM_KEY)
    if stored is None:
        return
    actual = state_dict_checksum(ckpt["state_dict"])
    if actual != stored:
        raise CheckpointError(
            f"checkpoint {path} is damaged: its weights do not match the SHA-256 checksum stored when it "
            f"was written (stored {stored[:12]}..., now {actual[:12]}...), e.g. flipped bits on the disk or a "
            f"bad copy. Use another checkpoint (last.ckpt or best.ckpt of the run), or copy it again"
        )


def check_initialized_flags(ckpt: dict, path) -> None:
    """Refuse a checkpoint of a trained model (``global_step > 0``) in which some data-initialised
    layer (ActNorm) is flagged uninitialised: resuming would re-initialise it over its trained
    values from the first batch."""
    step = int(ckpt.get("global_step", 0) or 0)
    flags = {k: v for k, v in ckpt["state_dict"].items() if k.endswith(".initialized") and isinstance(v, torch.Tensor)}
    off = sorted(k for k, v in flags.items() if not bool(v.all()))
    if step > 0 and off:
        shown = ", ".join(off[:4]) + (f" and {len(off) - 4} more" if len(off) > 4 else "")
        raise CheckpointError(
            f"checkpoint {path} ({_written_by(ckpt)}) was trained for {step} steps, but {len(off)} of its "
            f"{len(flags)} data-initialised layers are flagged uninitialised ({shown}); resuming would "
            f"re-initialise them over their trained values. The file is damaged or was edited: use another "
            f"checkpoint, or set those 'initialized' entries of its state_dict to True if the values are trained"
        )


def stored_data_config(ckpt: dict, path) -> dict:
    """The data module config a checkpoint was trained with; :class:`CheckpointError` when absent."""
    stored = (ckpt.get("hyper_parameters") or {}).get("data_config")
    if not stored:
        raise CheckpointError(
            f"checkpoint {path} ({_written_by(ckpt)}) holds no data_config, so eval.py, sample.py and "
            f"score.py cannot rebuild its data. Use a checkpoint written by `python train.py`, or add the "
            f"config: ckpt['hyper_parameters']['data_config'] = {{'_target_': 'glowlab.data.FlowDataModule', "
            f"'dataset': ..., 'n_bits': ..., ...}} and torch.save it again"
        )
    return stored


# model-config keys that change how the flow runs, not its parameters: they may differ on resume
RUNTIME_MODEL_KEYS = ("compile", "memory_saving")


def model_config_differences(stored: dict, requested: dict) -> list[str]:
    """``["model.KEY: checkpoint A, this run B", ...]`` for every key whose value differs (keys of
    :data:`RUNTIME_MODEL_KEYS` excepted)."""
    diffs = []
    for key in sorted(set(stored) | set(requested)):
        if key in RUNTIME_MODEL_KEYS:
            continue
        a, b = stored.get(key, "<unset>"), requested.get(key, "<unset>")
        if _normalise(a) != _normalise(b):
            diffs.append(f"model.{key}: checkpoint {a!r}, this run {b!r}")
    return diffs


def _normalise(v):
    return [_normalise(x) for x in v] if isinstance(v, (list, tuple)) else v


def check_resume_model_config(ckpt: dict, requested: dict, path) -> None:
    """Refuse to resume ``ckpt`` into a model built from another config, naming the keys that differ."""
    from glowlab.models.compat import explicit_model_config, legacy_model_config

    stored = (ckpt.get("hyper_parameters") or {}).get("model_config")
    if stored is None:
        return
    # compared as the models they build: a 0.1 checkpoint's config with the values that reproduce it
    stored, _ = legacy_model_config(stored, ckpt.get("state_dict") or {}, prefix="model.")
    diffs = model_config_differences(stored, explicit_model_config(requested))
    if diffs:
        raise CheckpointError(
            f"cannot resume from {path}: this run's model config differs from the checkpoint's in "
            f"{len(diffs)} key(s): " + "; ".join(diffs) + ". Resume with the checkpoint's settings "
            "(the same experiment=... and model.* overrides), or start a new run without ckpt_path"
        )


# preprocessing a model is trained for: evaluating under other values scores other data
DATA_KEYS_OF_THE_MODEL = ("n_bits", "image_size", "crop", "pad_to")


def check_data_overrides(stored: dict, merged, path) -> None:
    """Refuse data overrides (eval.py/score.py/sample.py ``data.KEY=...``) that change what the
    model was trained on: ``n_bits`` and the image geometry."""
    changed = [f"data.{k}={merged.get(k)!r} (trained with {stored.get(k)!r})" for k in DATA_KEYS_OF_THE_MODEL
               if merged.get(k) != stored.get(k)]
    if changed:
        raise ValueError(
            f"{', '.join(changed)}: the model in {path} was trained on other data, so its bits/dim would be "
            f"a number about different images, not comparable to anything. Remove the override(s); "
            f"batch sizes, workers, root and limits may be changed"
        )


@contextmanager
def explain_load_errors(path, ckpt: dict | None = None):
    """Turn PyTorch's "Error(s) in loading state_dict" (missing, unexpected or mis-shaped keys) raised
    inside the block into a :class:`CheckpointError` naming the file, its version and what to do."""
    try:
        yield
    except RuntimeError as err:
        text = str(err)
        if "Error(s) in loading state_dict" not in text:
            raise
        missing = re.findall(r'"([^"]+)"', text.split("Missing key(s)")[1].split("Unexpected key(s)")[0]) \
            if "Missing key(s)" in text else []
        origin = _written_by(ckpt) if ckpt is not None else "of unknown version"
        if missing and all(k.endswith(".initialized") for k in missing):
            advice = ("it predates ActNorm's persistent 'initialized' flag. Its ActNorm values are trained, so "
                      "add the flags: for each missing key set ckpt['state_dict'][key] = torch.tensor(True), "
                      "then torch.save it again")
        else:
            advice = ("it was trained with another model config or code version. Evaluate or resume it with the "
                      "model settings it was trained with (they are in its hyper_parameters['model_config'])")
        first = text.split("\n\t", 1)[-1].strip().splitlines()
        raise CheckpointError(f"checkpoint {path} ({origin}) does not fit the model: {' '.join(first)[:600]}. "
                              f"{advice}") from err
