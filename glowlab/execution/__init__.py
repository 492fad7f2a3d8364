"""Execution strategies, kept apart from the layers: how a sequence of bijections is run in training
(plain autograd, gradient checkpointing, reversible backpropagation) and compiled.

* :mod:`glowlab.execution.memory_saving`: :class:`MemorySavingSequence` and its modes;
* :mod:`glowlab.execution.reversible`: the reversible autograd function; layers take part through
  their ``inverse_is_cheap`` flag and their recompute step (:mod:`glowlab.core.recompute`).
"""

from glowlab.execution.memory_saving import MEMORY_SAVING_MODES, MemorySavingSequence, check_memory_saving
from glowlab.execution.reversible import check_reversible, recompute_step, reversible_forward

__all__ = ["MEMORY_SAVING_MODES", "MemorySavingSequence", "check_memory_saving", "reversible_forward",
           "check_reversible", "recompute_step"]
