"""The flow contract, checked for every layer in ``glowlab.flows`` (GUIDE section 2 and 5).

Every layer is built at a tiny size and checked in the default dtype of ``--dtype`` (float64):
round trip, logdet against the autograd Jacobian, gradients, state dict and train/eval agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from glowlab.flows import (ActNorm, AdditiveCoupling, AffineCoupling, DiagonalScale, FlowSequence,
                           InvConv1x1, InvConv1x1LU, MLPAdditiveCoupling, Reverse, Shuffle, Squeeze,
                           Unsqueeze)

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

BATCH = 3


@dataclass(frozen=True)
class LayerCase:
    """A layer factory with the shape of its input (and of its conditioning input, if any)."""

    build: Callable[[], torch.nn.Module]
    x_shape: tuple[int, ...]
    cond_shape: tuple[int, ...] | None = None


def _affine(mask, parity, scale_fn, net, **kw):
    return LayerCase(lambda: AffineCoupling(3, 6, mask=mask, parity=parity, net=net, num_blocks=1,
                                            scale_fn=scale_fn, **kw), (BATCH, 3, 4, 4))


def _conditional(cond_shape, net="glow"):
    return LayerCase(lambda: AffineCoupling(3, 6, mask="channel", net=net, num_blocks=1, cond_channels=2),
                     (BATCH, 3, 4, 4), cond_shape)


def _sequence():
    return FlowSequence([ActNorm(3), InvConv1x1LU(3), AffineCoupling(3, 6, mask="checkerboard"), Squeeze(),
                         ActNorm(12), Shuffle(12), AffineCoupling(12, 6, parity=1, scale_fn="tanh")])


LAYERS = {
    "actnorm": LayerCase(lambda: ActNorm(3), (BATCH, 3, 4, 4)),
    "invconv": LayerCase(lambda: InvConv1x1(3), (BATCH, 3, 4, 4)),
    "invconv_lu": LayerCase(lambda: InvConv1x1LU(4), (BATCH, 4, 3, 3)),
    "reverse": LayerCase(Reverse, (BATCH, 3, 4, 4)),
    "shuffle": LayerCase(lambda: Shuffle(5), (BATCH, 5, 2, 2)),
    **{
        f"affine_{mask}{parity}_{scale_fn}_{net}": _affine(mask, parity, scale_fn, net)
        for mask in ("channel", "checkerboard") for parity in (0, 1)
        for scale_fn in ("sigmoid", "tanh") for net in ("glow", "resnet")
    },
    "affine_channel_no_actnorm": _affine("channel", 0, "sigmoid", "glow", actnorm=False),
    "affine_cond_vector": _conditional((BATCH, 2)),
    "affine_cond_map": _conditional((BATCH, 2, 4, 4)),
    "affine_cond_map_pooled": _conditional((BATCH, 2, 8, 8), net="resnet"),
    "affine_cond_map_upsampled": _conditional((BATCH, 2, 2, 2)),
    "additive_channel": LayerCase(lambda: AdditiveCoupling(4, 6, mask="channel", parity=1), (BATCH, 4, 4, 4)),
    "additive_checkerboard": LayerCase(lambda: AdditiveCoupling(2, 6, mask="checkerboard"), (BATCH, 2, 4, 4)),
    "mlp_additive_even": LayerCase(lambda: MLPAdditiveCoupling(18, 8, 2, parity=0), (BATCH, 2, 3, 3)),
    "mlp_additive_odd": LayerCase(lambda: MLPAdditiveCoupling(18, 8, 2, parity=1), (BATCH, 2, 3, 3)),
    "diagonal_scale": LayerCase(lambda: DiagonalScale((2, 3, 3)), (BATCH, 2, 3, 3)),
    "squeeze": LayerCase(Squeeze, (BATCH, 2, 4, 4)),
    "unsqueeze": LayerCase(Unsqueeze, (BATCH, 8, 2, 2)),
    "sequence": LayerCase(_sequence, (BATCH, 3, 4, 4)),
}

layer_names = pytest.mark.parametrize("name", list(LAYERS))


def make(name: str, seed: int = 0):
    """Build the layer ``name`` (RNG seeded with ``seed``) with a data batch and its conditioning."""
    case = LAYERS[name]
    torch.manual_seed(seed)
    layer = case.build()
    x = 0.7 * torch.randn(case.x_shape) + 0.2  # off-centre, not unit scale: ActNorm init is not a no-op
    cond = torch.randn(case.cond_shape) if case.cond_shape else None
    return layer, x, cond


def initialise(layer, x, cond):
    """Run the data-dependent initialisation (one training-mode forward pass)."""
    layer.train()
    with torch.no_grad():
        layer(x, cond)


def prepared(name: str, core_helpers):
    """A layer after ActNorm init and with every parameter perturbed, with its batch."""
    layer, x, cond = make(name)
    initialise(layer, x, cond)
    core_helpers.perturb_parameters(layer)
    return layer, x, cond


def assert_round_trip(layer, x, cond, atol):
    y, logdet = layer(x, cond)
    assert y.shape[0] == x.shape[0] and y.numel() == x.numel()  # same dimension D per sample
    assert logdet.shape == (x.shape[0],)
    x_back, ladj_inverse = layer.inverse(y, cond)
    torch.testing.assert_close(x_back, x, rtol=0, atol=atol)
    # the inverse reports log|det dx/dy|: minus the forward's at the same point
    torch.testing.assert_close(ladj_inverse, -logdet, rtol=1e-6, atol=max(atol, 1e-6))


@layer_names
@pytest.mark.parametrize("stage", ["random_init", "actnorm_init", "perturbed", "trained"])
def test_round_trip(name, stage, core_helpers, tol):
    """inverse(forward(x)) == x at random init, after ActNorm init, perturbed, and after Adam steps;
    in training mode and in eval mode (where the 1x1 convs use cached weights)."""
    h = core_helpers
    layer, x, cond = make(name)
    if stage == "random_init":
        layer.eval()
    else:
        initialise(layer, x, cond)
    if stage == "perturbed":
        h.perturb_parameters(layer)
    if stage == "trained":
        h.adam_steps(layer.parameters(), lambda: h.standard_normal_nll(*layer(x, cond)), steps=3)
    with torch.no_grad():
        assert_round_trip(layer, x, cond, tol.round_trip_atol)
        layer.eval()
        assert_round_trip(layer, x, cond, tol.round_trip_atol)
        assert_round_trip(layer, 2 * x, cond, tol.round_trip_atol)  # data it was not initialised on


@layer_names
def test_logdet_matches_autograd_jacobian(name, core_helpers, tol):
    """logdet == slogdet of the Jacobian of the flattened map, per sample, with perturbed parameters;
    samples do not influence each other."""
    layer, x, cond = prepared(name, core_helpers)
    layer.eval()
    with torch.no_grad():
        _, logdet = layer(x, cond)
    expected, cross = core_helpers.jacobian_logdet(lambda v: layer(v, cond)[0], x)
    assert logdet.dtype == torch.promote_types(x.dtype, torch.float32)
    torch.testing.assert_close(logdet, expected, rtol=tol.logdet_rtol, atol=tol.logdet_atol)
    assert cross == 0


@pytest.mark.parametrize("name", [n for n in LAYERS if n.startswith(("affine", "sequence", "mlp", "actnorm"))])
def test_perturbation_makes_layer_non_trivial(name, core_helpers):
    """The perturbed layers used by the logdet checks are not volume preserving or identity maps."""
    layer, x, cond = prepared(name, core_helpers)
    with torch.no_grad():
        y, logdet = layer.eval()(x, cond)
    assert y.shape != x.shape or not torch.allclose(y, x)
    if not name.startswith("mlp"):  # NICE couplings are volume preserving by design
        assert logdet.abs().min() > 1e-3


@layer_names
def test_gradients_reach_every_parameter(name, core_helpers):
    """After init and perturbation, every parameter (and the input) gets a finite, nonzero
    gradient of the NLL."""
    layer, x, cond = prepared(name, core_helpers)
    layer.train()
    x.requires_grad_(True)
    core_helpers.standard_normal_nll(*layer(x, cond)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().min() > 0
    core_helpers.assert_every_parameter_has_gradient(layer)


@layer_names
def test_state_dict_round_trip(name, core_helpers):
    """Loading a state dict into a freshly built layer gives identical outputs, and a training-mode
    forward pass on a different batch afterwards does not re-initialise anything."""
    layer, x, cond = prepared(name, core_helpers)
    fresh, _, _ = make(name, seed=1)
    fresh.load_state_dict(layer.state_dict())
    layer.eval(), fresh.eval()
    with torch.no_grad():
        y, logdet = layer(x, cond)
        y_fresh, logdet_fresh = fresh(x, cond)
        assert torch.equal(y, y_fresh) and torch.equal(logdet, logdet_fresh)
        assert torch.equal(layer.inverse(y, cond)[0], fresh.inverse(y, cond)[0])
        fresh.train()(3 * x - 1, cond)
    core_helpers.assert_same_state(layer, fresh)  # nothing changed in the training-mode forward


@layer_names
def test_train_and_eval_agree_after_init(name, core_helpers, tol):
    """After initialisation the layer computes the same map in training and in eval mode."""
    layer, x, cond = prepared(name, core_helpers)
    other = 0.5 * torch.randn_like(x)
    with torch.no_grad():
        y_train, ld_train = layer.train()(other, cond)
        y_eval, ld_eval = layer.eval()(other, cond)
    torch.testing.assert_close(y_eval, y_train, rtol=0, atol=tol.round_trip_atol)
    torch.testing.assert_close(ld_eval, ld_train, rtol=tol.logdet_rtol, atol=tol.logdet_atol)
