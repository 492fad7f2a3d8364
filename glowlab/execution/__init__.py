"""Execution strategies, kept apart from the layers: how a sequence of bijections is run in training
(plain autograd, gradient checkpointing, reversible backpropagation) and compiled."""

from glowlab.execution.memory_saving import (MEMORY_SAVING_MODES, MemorySavingSequence, check_memory_saving,
                                             reversible_forward)

__all__ = ["MEMORY_SAVING_MODES", "MemorySavingSequence", "check_memory_saving", "reversible_forward"]
