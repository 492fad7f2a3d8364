"""Build a model from its config: the one place where a ``_target_`` becomes a density.

Example:
    >>> m = build_model({"_target_": "glowlab.models.MAF", "event_shape": [2], "layers": 1, "hidden_features": 8})
    >>> type(m).__name__, tuple(m.event_shape)
    ('MAF', (2,))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import get_object
from torch import nn

__all__ = ["build_model"]


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """Call ``config["_target_"]`` (a model class, or a factory function such as
    :func:`glowlab.image.autoregressive_prior.glow_with_autoregressive_prior`) with the other keys.

    Called directly rather than through ``hydra.utils.instantiate``, so a bad argument raises the
    model's own ``ValueError``, which names the argument, instead of Hydra's wrapper around it.
    """
    config = dict(config)
    target = config.pop("_target_", None)
    if not isinstance(target, str):
        raise ValueError(f"a model config needs a `_target_` naming the model class, got {target!r}; "
                         f"e.g. _target_: glowlab.models.Glow")
    return get_object(target)(**config)
