"""Autoregressive flows: MADE masks for vectors, PixelCNN-style masked convolutions for images,
affine and rational-quadratic transformers, and the MAF and IAF layers built from them."""

from glowlab.layers.autoregressive.layer import (
    PROGRESS_DELAY_S,
    InverseAutoregressive,
    MaskedAutoregressive,
)
from glowlab.layers.autoregressive.made import (
    ACTIVATIONS,
    MADE,
    ORDERS,
    MaskedLinear,
    autoregressive_order,
)
from glowlab.layers.autoregressive.masked_conv import (
    MaskedConv2d,
    MaskedConvNet,
    raster_order,
)
from glowlab.layers.autoregressive.transformers import (
    TRANSFORMERS,
    AffineTransformer,
    SplineTransformer,
    make_transformer,
)

__all__ = [
    "ACTIVATIONS", "MADE", "ORDERS", "PROGRESS_DELAY_S", "TRANSFORMERS", "AffineTransformer",
    "InverseAutoregressive", "MaskedAutoregressive", "MaskedConv2d", "MaskedConvNet", "MaskedLinear",
    "SplineTransformer", "autoregressive_order", "make_transformer", "raster_order",
]
