"""MAF and IAF densities for vectors and images (no Lightning needed).

Both are a standard normal pushed through ``layers`` autoregressive layers whose orders alternate
(or are random, for vectors), so that every element is, in some layer, conditioned on every other:

* :class:`MAF` (Papamakarios et al., 2017): ``log_prob`` is one network pass per layer;
  ``sample`` is sequential, one pass per element per layer (``D`` for vectors, ``C·H·W`` for
  images, pixel by pixel: an 8-bit 1x28x28 image takes 784 passes per layer).
* :class:`IAF` (Kingma et al., 2016): the reverse trade, ``sample`` and ``rsample_and_log_prob``
  in one pass per layer (what variational inference needs), ``log_prob`` of an arbitrary point
  sequential.

Vectors use MADE networks; images use PixelCNN-style masked convolutions (``network="conv"``,
the default) or a MADE over the flattened image (``network="made"``, the MAF paper's choice for
MNIST and CIFAR-10). ``log_prob`` is ``[B]`` nats per sample, in model space; for images in
bits/dim see :func:`glowlab.likelihood.bits_per_dim`.

References:
    Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling, "Improved Variational Inference with
    Inverse Autoregressive Flow", NeurIPS 2016.

Example:
    >>> import torch
    >>> maf = MAF(event_shape=(3,), layers=2, hidden_features=8)
    >>> x = maf.sample(4)
    >>> maf.log_prob(x).shape
    torch.Size([4])
    >>> iaf = IAF(image_shape=(1, 2, 2), layers=2, hidden_features=4)
    >>> x, lp = iaf.rsample_and_log_prob(4)  # one pass per layer
    >>> bool(torch.allclose(lp, iaf.log_prob(x), atol=1e-4))  # four passes per layer
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from glowlab.core import (
    Bijection,
    Compose,
    ContextError,
    FlowDensity,
    StandardNormal,
    zero_ladj,
)
from glowlab.core.context import ContextEmbedding
from glowlab.core.density import context_batch
from glowlab.layers.autoregressive import InverseAutoregressive, MaskedAutoregressive

__all__ = ["IAF", "MAF", "NETWORKS", "ORDER_SCHEMES", "Flatten"]

#: How the layers' orders are chosen: alternate identity/reversed, random per layer (vectors and
#: ``network="made"`` only, seeded with ``seed + layer``), or the identity in every layer.
ORDER_SCHEMES = ("alternate", "random", "identity")
#: ``"auto"``: MADE for vectors, masked convolutions for images.
NETWORKS = ("auto", "made", "conv")


class Flatten(Bijection):
    """``[B, C, H, W] <-> [B, C·H·W]``, volume preserving (ladj 0)."""

    event_dim = 3

    def __init__(self, image_shape: Sequence[int]):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)

    def forward(self, x: torch.Tensor, context=None):
        return x.flatten(1), zero_ladj(x)

    def inverse(self, y: torch.Tensor, context=None):
        return y.view(y.shape[0], *self.image_shape), zero_ladj(y)


class MAF(FlowDensity):
    """Masked autoregressive flow: cheap ``log_prob``, sequential ``sample``.

    Args:
        event_shape: ``(D,)`` for vectors; give this or ``image_shape``.
        image_shape: ``(C, H, W)`` for images (in model space, e.g. dequantised to ``[-0.5, 0.5)``).
        layers: number of autoregressive layers.
        hidden_features: hidden width of each MADE (an int, or a list of widths), or hidden
            channels of each masked-convolution network.
        hidden_layers: number of hidden layers when ``hidden_features`` is an int.
        transformer: ``"affine"`` (soft-clamped log-scale, ``max_log_scale``) or ``"spline"``
            (rational-quadratic, ``bins`` bins on ``[-bound, bound]``).
        network: ``"auto"``, ``"made"`` or ``"conv"`` (see :data:`NETWORKS`).
        order: ``"alternate"``, ``"random"`` or ``"identity"`` (see :data:`ORDER_SCHEMES`).
        seed: base seed of random orders (stored in the state dict with each order).
        kernel_size: kernel of the masked convolutions.
        num_classes: > 0: conditional on a class label ``[B]`` (long).
        context_features: > 0 (and ``num_classes == 0``): conditional on a float tensor ``[B, F]``.
        embedding_features: a conditional model's context goes through a
            :class:`~glowlab.core.context.ContextEmbedding` to this many features, which every
            layer's network sees.
        activation: hidden activation name (``relu``, ``elu``, ``tanh``, ``gelu``, ``silu``).
    """

    layer_class: type[Bijection] = MaskedAutoregressive

    def __init__(self, event_shape: Sequence[int] | None = None, image_shape: Sequence[int] | None = None,
                 layers: int = 5, hidden_features: int | Sequence[int] = 64, hidden_layers: int = 2,
                 transformer: str = "affine", network: str = "auto", order: str = "alternate", seed: int = 0,
                 kernel_size: int = 3, num_classes: int = 0, context_features: int = 0, embedding_features: int = 16,
                 activation: str = "relu", bins: int = 8, bound: float = 3.0, max_log_scale: float = 3.0):
        if (event_shape is None) == (image_shape is None):
            raise ValueError(f"give exactly one of event_shape=(D,) for vectors or image_shape=(C, H, W) for images, "
                             f"got event_shape={event_shape!r} and image_shape={image_shape!r}")
        shape = tuple(int(s) for s in (event_shape if event_shape is not None else image_shape))
        if event_shape is not None and len(shape) != 1 or image_shape is not None and len(shape) != 3:
            raise ValueError(f"event_shape must be (D,) and image_shape (C, H, W), got {shape!r}")
        for name, value, choices in (("network", network, NETWORKS), ("order", order, ORDER_SCHEMES)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        network = ("made" if len(shape) == 1 else "conv") if network == "auto" else network
        if network == "conv" and len(shape) != 3:
            raise ValueError("network='conv' needs image_shape=(C, H, W); vectors use network='made'")
        if network == "conv" and order == "random":
            raise ValueError("masked convolutions keep the raster order: use order='alternate' or 'identity' with "
                             "network='conv', or network='made' for random orders")
        # checks num_classes / context_features and names what is wrong
        embedding = (ContextEmbedding(num_classes, context_features, embedding_features, owner=type(self).__name__)
                     if num_classes or context_features else None)
        flat = (math.prod(shape),) if network == "made" else shape
        kwargs = {"hidden_features": hidden_features, "hidden_layers": hidden_layers, "transformer": transformer,
                  "context_features": embedding.features if embedding else 0, "kernel_size": kernel_size,
                  "activation": activation,
                  "bins": bins, "bound": bound, "max_log_scale": max_log_scale}
        steps: list[Bijection] = [Flatten(shape)] if flat != shape else []
        for i in range(layers):
            layer_order = {"alternate": ("identity", "reversed")[i % 2], "identity": "identity"}.get(order, order)
            steps.append(self.layer_class(flat, order=layer_order, seed=seed + i if order == "random" else None,
                                          **kwargs))
        super().__init__(StandardNormal(flat), Compose(steps))
        self.event_shape = shape
        self.image_shape = shape if len(shape) == 3 else None
        self.num_classes, self.context_features, self.network = num_classes, context_features, network
        self.embedding = embedding

    @property
    def num_dims(self) -> int:
        """D = the number of elements of one sample (C·H·W for images)."""
        return math.prod(self.event_shape)

    @property
    def sampling_passes(self) -> int:
        """Network passes of one sequential sweep through every layer (``sample`` for MAF,
        ``log_prob`` for IAF)."""
        return sum(getattr(f, "num_passes", 0) for f in self.transform)

    def _context(self, context, batch: int):
        if self.embedding is not None:
            return self.embedding(context, batch)
        if context is not None:
            raise ContextError(f"{type(self).__name__} is unconditional; build it with num_classes or context_features "
                               f"to condition on a context, or pass context=None")
        return None

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"{type(self).__name__} was built for samples of shape {self.event_shape}, got a "
                             f"tensor of shape {tuple(x.shape)}; build it with the data's shape")

    def encode(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, ladj, log_base)``: the latent, the ladj and ``log N(z; 0, I)``, both ``[B]`` nats
        (``log_prob = log_base + ladj``), the layout the multiscale models' ``encode`` returns."""
        self._check(x)
        z, ladj = self.transform(x, self._context(context, x.shape[0]))
        return z, ladj, self.base.log_prob(z)

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """``log p(x | context)``, ``[B]`` nats per sample."""
        _, ladj, log_base = self.encode(x, context)
        return log_base + ladj

    def rsample_and_log_prob(self, n: int, context=None, temperature: float = 1.0,
                             generator: torch.Generator | None = None):
        """``n`` differentiable draws ``[n, *event_shape]`` and their ``log_prob`` ``[n]`` (of the
        model itself, whatever the temperature that scaled the base's standard deviation).
        ``generator`` makes the draws reproducible."""
        context_batch(n, context)
        anchor = self.base._anchor
        z = torch.randn((n, *self.base.event_shape), generator=generator, device=anchor.device,
                        dtype=anchor.dtype) * temperature
        x, ladj_inv = self.transform.inverse(z, self._context(context, n))
        return x, self.base.log_prob(z) - ladj_inv

    @torch.no_grad()
    def sample(self, n: int, context=None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws ``[n, *event_shape]`` without a graph (sequential for MAF, see the module
        docstring); ``generator`` makes them reproducible."""
        return self.rsample_and_log_prob(n, context, temperature, generator)[0]


class IAF(MAF):
    """Inverse autoregressive flow: ``sample`` and ``rsample_and_log_prob`` in one pass per layer,
    sequential ``log_prob``. Same arguments as :class:`MAF`; each layer is an
    :class:`~glowlab.layers.autoregressive.InverseAutoregressive`.
    """

    layer_class = InverseAutoregressive
