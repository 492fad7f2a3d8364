"""The two contracts every family of flows keeps: bijections and densities (no Lightning needed).

* :class:`Bijection`: ``forward(x, context=None) -> (y, ladj)`` and ``inverse(y, context=None) ->
  (x, ladj)``, with ``ladj`` ``[B]`` nats; :class:`Compose` chains them; :class:`Inverse` swaps
  the directions.
* :class:`Density`: ``log_prob``, ``sample`` and ``rsample_and_log_prob``; :class:`FlowDensity`
  is a base density pushed through a bijection.
"""

from glowlab.core.bijection import INVERSE_KINDS, Bijection, Compose, Inverse, check_event, logdet_dtype, zero_ladj
from glowlab.core.data_init import DataDependentInit, needs_data_init
from glowlab.core.density import Density, FlowDensity, StandardNormal, context_batch
from glowlab.core.errors import ContextError, InverseNotAvailable, InversionError
from glowlab.core.recompute import Recomputable, recompute_by_inverse

__all__ = [
    "Bijection", "Compose", "Inverse", "INVERSE_KINDS", "logdet_dtype", "zero_ladj", "check_event",
    "DataDependentInit", "needs_data_init", "Recomputable", "recompute_by_inverse",
    "Density", "StandardNormal", "FlowDensity", "context_batch",
    "InverseNotAvailable", "InversionError", "ContextError",
]
