"""Model configs of earlier glowlab versions: the constructor arguments that rebuild the density a
checkpoint holds.

A constructor argument added after glowlab 0.1 gets a default that changes the model for new
runs, so a checkpoint whose stored ``model_config`` lacks the key must be rebuilt with the value
that reproduces what 0.1 computed. The rules live here, once, and every loader uses them:
:meth:`glowlab.training.FlowModule.on_load_checkpoint`, :func:`glowlab.analysis.load_model` and
the resume check of :mod:`glowlab.training.checkpoint_checks`.

Rules (a key already present in the stored config is never changed):

* **class-conditional couplings**: a class-conditional 0.1 model fed its label to the top prior
  only. A config without ``condition_couplings`` whose weights have the top prior's class
  embedding but no ``context_embedding`` is rebuilt with ``condition_couplings=False``.
* **RealNVP's bounded translation**: since 0.2 RealNVP soft-clamps each coupling's translation,
  ``t -> b * tanh(t / b)`` with ``b = translation_bound`` (5.0 by default). A RealNVP config
  without ``translation_bound`` is rebuilt with ``translation_bound=None`` (unbounded, as in 0.1),
  so its log-density is unchanged.

New runs write every such key explicitly (:func:`explicit_model_config`), so their checkpoints are
never mistaken for 0.1 ones.

Example:
    >>> config = {"_target_": "glowlab.models.RealNVP", "image_shape": [1, 8, 8], "levels": 2}
    >>> upgraded, notes = legacy_model_config(config, state_dict={})
    >>> upgraded["translation_bound"], len(notes)
    (None, 1)
    >>> explicit_model_config(config)["translation_bound"]
    5.0
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_object

__all__ = ["explicit_model_config", "legacy_model_config"]


def _model_class(config: Mapping[str, Any]) -> type | None:
    target = config.get("_target_")
    try:
        found = get_object(target) if isinstance(target, str) else None
        return found if isinstance(found, type) else None  # a factory function has no legacy rules
    except Exception:  # an unknown target fails later, where the model is built, with its own message
        return None


def _accepts(cls: type, key: str) -> bool:
    try:
        return key in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _is_realnvp(cls: type | None) -> bool:
    from glowlab.models.realnvp import RealNVP

    return isinstance(cls, type) and issubclass(cls, RealNVP)


def legacy_model_config(config: Mapping[str, Any], state_dict: Mapping[str, Any],
                        prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """The constructor arguments that rebuild the model of a checkpoint written by an earlier version.

    Args:
        config: the stored model config (``{"_target_": ..., **kwargs}``).
        state_dict: the stored weights (only their names are read).
        prefix: the prefix of the model's weights in ``state_dict`` (``"model."`` in a FlowModule
            checkpoint, ``""`` for a bare model state dict).
    Returns:
        ``(config, notes)``: a new dict (``config`` itself is not changed) and one sentence per rule
        applied, for the caller to log.
    """
    config, notes = dict(config), []
    cls = _model_class(config)
    if cls is None:
        return config, notes
    if config.get("num_classes") and "condition_couplings" not in config and _accepts(cls, "condition_couplings") \
            and prefix + "top_prior.class_embedding.weight" in state_dict \
            and prefix + "context_embedding.weight" not in state_dict:
        config["condition_couplings"] = False
        notes.append(f"checkpoint from glowlab 0.1: class-conditional {cls.__name__} rebuilt with "
                     f"condition_couplings=False (its label reaches the top prior only)")
    if _is_realnvp(cls) and "translation_bound" not in config:
        config["translation_bound"] = None
        notes.append("checkpoint from glowlab 0.1: RealNVP rebuilt with translation_bound=None (unbounded "
                     "coupling translation, as it was trained)")
    return config, notes


def explicit_model_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every key that :func:`legacy_model_config` reads written out at the
    constructor's current default, so a checkpoint that stores it is read as a current one."""
    config = dict(config)
    cls = _model_class(config)
    if _is_realnvp(cls) and "translation_bound" not in config:
        config["translation_bound"] = inspect.signature(cls).parameters["translation_bound"].default
    return config
