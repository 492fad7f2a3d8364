"""MADE: masked multilayer perceptrons whose outputs are autoregressive in a chosen order.

Each feature ``i`` of a ``D``-vector gets a *rank* ``r_i`` (its position in the order) and the input
*degree* ``m(i) = r_i + 1 ∈ {1..D}``. Every hidden unit ``k`` gets a degree ``m(k) ∈ {1..D-1}`` and
may see a unit of the layer below if ``m(k) >= m(below)``; the outputs for feature ``i`` have degree
``m(i)`` and see hidden units with ``m(i) > m(k)`` (strictly). Multiplying the masks, output ``i``
can only depend on inputs of lower rank: the Jacobian of the network, taken in the order, is
strictly lower triangular.

Hidden degrees are assigned cyclically, ``1, 2, .., D-1, 1, 2, ..``, in every hidden layer. With at
least ``D - 1`` units per layer every degree is present in every layer, so every output ``i`` is
connected to *every* input of lower rank. A narrower layer cannot hold every degree: its degrees are
then spread evenly over ``1..D-1`` starting at 1, so every output but the first still sees the first
input (no output is cut off from every input, which a random assignment of degrees, as in the MADE
paper, can do), but some pairs are not connected. With a context, which every hidden unit of the
first layer sees, hidden degrees run over ``{0..D-1}`` instead: degree-0 units see only the context,
so the first feature in the order depends on it too.

References:
    Germain, Gregor, Murray, Larochelle, "MADE: Masked Autoencoder for Distribution
    Estimation", ICML 2015.

Example:
    >>> import torch
    >>> made = MADE(4, hidden_features=[8, 8], params_per_feature=2, order="reversed")
    >>> made(torch.randn(3, 4)).shape  # [B, params per feature, D]
    torch.Size([3, 2, 4])
    >>> made.order.tolist()  # rank of each feature
    [3, 2, 1, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "MADE", "ORDERS", "MaskedLinear", "autoregressive_order"]

#: The orders a MADE can be built from.
ORDERS = ("identity", "reversed", "random")

#: Hidden activations by name (what configs pass).
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


def autoregressive_order(features: int, order: str = "identity", seed: int | None = None) -> torch.Tensor:
    """The rank of each of ``features`` features (``[D]`` long, a permutation of ``0..D-1``).

    ``"identity"``: feature ``i`` comes ``i``-th; ``"reversed"``: last comes first; ``"random"``: a
    permutation drawn from a generator seeded with ``seed`` (required).
    """
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"features must be a positive integer, got {features!r}")
    if order == "identity":
        return torch.arange(features)
    if order == "reversed":
        return torch.arange(features - 1, -1, -1)
    if order == "random":
        if seed is None:
            raise ValueError("order='random' needs a seed (an int) so the order can be rebuilt")
        return torch.randperm(features, generator=torch.Generator().manual_seed(int(seed)))
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def activation_module(name: str) -> nn.Module:
    """``ACTIVATIONS[name]()``, with an error listing the choices."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def masked_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight * module.mask``. Without a graph (sampling, evaluation) the product is cached
    until the weight or the mask changes (in place, or moved to another device or dtype): a MAF's
    sequential inverse then does not recompute it at each of its ``D`` passes."""
    weight, mask = module.weight, module.mask
    if torch.is_grad_enabled() and weight.requires_grad:
        return weight * mask
    key = (weight._version, mask._version, weight.data_ptr(), mask.data_ptr(), weight.dtype)
    if module.__dict__.get("_masked_key") != key:
        module.__dict__["_masked"] = (weight * mask).detach()
        module.__dict__["_masked_key"] = key
    return module.__dict__["_masked"]


class MaskedLinear(nn.Linear):
    """``y = x (W ⊙ M)ᵀ + b`` with a fixed binary ``mask`` ``M`` ``[out, in]`` (a persistent
    buffer, so a saved model reloads with its own connectivity)."""

    def __init__(self, mask: torch.Tensor, bias: bool = True):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, masked_weight(self), self.bias)


class MADE(nn.Module):
    """A masked MLP ``[B, D] -> [B, P, D]``: ``P`` parameters per feature, each computed only from
    the features of lower rank (and the context).

    Args:
        features: ``D``.
        hidden_features: widths of the hidden layers (an int: one layer); ``>= D - 1`` each
            (``>= D`` with a context) connects every output to every input before it.
        params_per_feature: ``P`` (2 for an affine transformer).
        order: ``"identity"``, ``"reversed"`` or ``"random"``; or the ranks themselves (``[D]``).
        seed: the seed of a random order; drawn from torch's global generator when None. It and
            the ranks are persistent buffers: ``load_state_dict`` restores the order.
        context_features: width of a tensor context ``[B, F]``, seen by the first layer unmasked.
        activation: a name in :data:`ACTIVATIONS`.

    The output layer is zero-initialised, so a transformer reading it starts at the identity.
    """

    def __init__(self, features: int, hidden_features: int | Sequence[int] = (64, 64), params_per_feature: int = 2,
                 order: str | torch.Tensor = "identity", seed: int | None = None, context_features: int = 0,
                 activation: str = "relu"):
        super().__init__()
        hidden = [hidden_features] if isinstance(hidden_features, int) else list(hidden_features)
        # hidden degrees cycle over lo..D-1; degree 0 (units that see only the context) exists only
        # with a context, so that the first feature in the order depends on it too
        lo = 0 if context_features else 1
        need = max(features - lo, 1)
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden layers need at least one unit each, got hidden_features={hidden_features!r}")
        if params_per_feature < 1 or context_features < 0:
            raise ValueError(f"params_per_feature must be >= 1 and context_features >= 0, got "
                             f"{params_per_feature} and {context_features}")
        if order == "random" and seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        ranks = order if isinstance(order, torch.Tensor) else autoregressive_order(features, order, seed)
        ranks = torch.as_tensor(ranks, dtype=torch.long)
        if sorted(ranks.tolist()) != list(range(features)):
            raise ValueError(f"an order must be a permutation of 0..{features - 1}, got {ranks.tolist()}")
        self.features, self.params_per_feature, self.context_features = features, params_per_feature, context_features
        self.register_buffer("order", ranks)
        self.register_buffer("seed", torch.tensor(-1 if seed is None else int(seed)))

        degrees = ranks + 1
        layers: list[nn.Module] = []
        below = degrees
        for i, width in enumerate(hidden):
            if features <= lo:
                deg = torch.zeros(int(width), dtype=torch.long)
            elif width >= need:  # every degree, cyclically
                deg = lo + torch.arange(int(width)) % need
            elif lo == 0 and width >= 2:  # a context-only unit, the others spread evenly from 1
                deg = torch.cat([torch.zeros(1, dtype=torch.long),
                                 1 + torch.arange(int(width) - 1) * (features - 1) // (int(width) - 1)])
            else:  # spread evenly, the lowest degree first
                deg = lo + torch.arange(int(width)) * need // int(width)
            mask = deg[:, None] >= below[None, :]
            if i == 0 and context_features:
                mask = torch.cat([mask, mask.new_ones(int(width), context_features)], dim=1)
            layers += [MaskedLinear(mask), activation_module(activation)]
            below = deg
        out_deg = degrees.repeat(params_per_feature)  # unit p * D + i is parameter p of feature i
        mask = out_deg[:, None] > below[None, :]
        if not hidden and context_features:
            mask = torch.cat([mask, mask.new_ones(len(out_deg), context_features)], dim=1)
        layers.append(MaskedLinear(mask))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)

    def connectivity(self) -> torch.Tensor:
        """``[D, D]`` boolean: entry ``(i, j)`` says whether output ``i`` can depend on input ``j``
        through some path of the masks (for tests and pictures)."""
        path = None
        for m in self.net:
            if isinstance(m, MaskedLinear):
                mask = m.mask[:, :self.features] if path is None else m.mask
                path = mask if path is None else (mask @ path).clamp(max=1)
        return path.view(self.params_per_feature, self.features, self.features).amax(0) > 0

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(f"MADE over {self.features} features expects [B, {self.features}], got "
                             f"{tuple(x.shape)}")
        if self.context_features:
            if context is None or context.shape != (x.shape[0], self.context_features):
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"this MADE is conditional: pass a context of shape [B, "
                                 f"{self.context_features}] with B={x.shape[0]}, got {got}")
            x = torch.cat([x, context.to(x.dtype)], dim=1)
        return self.net(x).view(x.shape[0], self.params_per_feature, self.features)
