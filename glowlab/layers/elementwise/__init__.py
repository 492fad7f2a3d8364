"""Elementwise and per-channel bijections: each output dimension depends on one input dimension."""

from glowlab.layers.elementwise.actnorm import ActNorm, all_reduce_mean
from glowlab.layers.elementwise.logistic_mixture import logistic_mixture
from glowlab.layers.elementwise.scaling import DiagonalScale
from glowlab.layers.elementwise.splines import rational_quadratic

__all__ = ["ActNorm", "all_reduce_mean", "DiagonalScale", "rational_quadratic", "logistic_mixture"]
