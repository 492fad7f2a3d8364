"""The bijection contract, checked for every layer of every family (GUIDE sections 2 and 5).

Every layer is built at a tiny size and checked in the default dtype of ``--dtype`` (float64):

* round trip ``inverse(forward(x)) == x`` (tolerance by ``inverse_kind``: rounding for
  ``analytic``/``sequential``, the solver's for ``numerical``), and the inverse's ladj equals
  minus the forward's; a layer without an inverse (``"none"``) raises ``InverseNotAvailable``;
* the ladj against ``slogdet`` of the autograd Jacobian with perturbed parameters, in both
  directions;
* gradients reach every parameter and the input; a state dict round trip gives identical outputs;
  training and eval mode agree after initialisation.

A new layer joins by adding one line to :data:`LAYERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from glowlab.core import Compose, InverseNotAvailable
from glowlab.image import Squeeze, Unsqueeze
from glowlab.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    DiagonalScale,
    InvConv1x1,
    InvConv1x1LU,
    MLPAdditiveCoupling,
    Reverse,
    Shuffle,
)
from glowlab.layers.autoregressive import InverseAutoregressive, MaskedAutoregressive
from glowlab.layers.continuous import CNF, ODEMLP, ODEConvNet
from glowlab.layers.coupling.flowpp_net import FlowppCouplingNet
from glowlab.layers.coupling.mixture import MixtureCoupling
from glowlab.layers.coupling.spline import SplineCoupling
from glowlab.layers.vi import Planar, Radial, VectorAffineCoupling

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

BATCH = 3


@dataclass(frozen=True)
class LayerCase:
    """A layer factory with the shape of its input (and of its ``context``, if any).

    ``round_trip_atol``: the tolerance of a numerical inverse (None: that of ``--dtype``);
    ``logdet_atol``: the same for the ladj of a numerical layer (an ODE solve's ladj is exact only
    to the solver's tolerance); ``slow``: marks the case's tests slow.
    """

    build: Callable[[], torch.nn.Module]
    x_shape: tuple[int, ...]
    cond_shape: tuple[int, ...] | None = None
    round_trip_atol: float | None = None
    logdet_atol: float | None = None
    slow: bool = False


def _affine(mask, parity, scale_fn, net, **kw):
    return LayerCase(lambda: AffineCoupling(3, 6, mask=mask, parity=parity, net=net, num_blocks=1,
                                            scale_fn=scale_fn, **kw), (BATCH, 3, 4, 4))


def _conditional(cond_shape, net="glow"):
    return LayerCase(lambda: AffineCoupling(3, 6, mask="channel", net=net, num_blocks=1, cond_channels=2),
                     (BATCH, 3, 4, 4), cond_shape)


def _sequence():
    return Compose([ActNorm(3), InvConv1x1LU(3), AffineCoupling(3, 6, mask="checkerboard"), Squeeze(),
                    ActNorm(12), Shuffle(12), AffineCoupling(12, 6, parity=1, scale_fn="tanh")])


def _vector_sequence():
    return Compose([ActNorm(4), InvConv1x1(4), AffineCoupling(4, 6, event_dim=1), Reverse(),
                    SplineCoupling(4, 6, event_dim=1, bins=3), Shuffle(4), VectorAffineCoupling(4, 6)])


def _cnf(event_dim, **kw):
    net = ODEMLP(3, (6,)) if event_dim == 1 else ODEConvNet(1, (4,))
    return CNF(net, event_dim=event_dim, trace="exact", rtol=1e-9, atol=1e-9, **kw)


def _flowpp_without_attention():
    """An affine coupling whose Flow++ network has no attention (the gated-convolution variant)."""
    layer = AffineCoupling(4, 8, net="flowpp", num_blocks=1)
    layer.net = FlowppCouplingNet(layer.net.input.in_channels, layer.net.output.conv.out_channels, 8, 1,
                                  attention=False)
    return layer


_NUMERICAL = dict(round_trip_atol=1e-7, logdet_atol=1e-6)

LAYERS = {
    # elementwise and linear, images and vectors
    "actnorm": LayerCase(lambda: ActNorm(3), (BATCH, 3, 4, 4)),
    "actnorm_vector": LayerCase(lambda: ActNorm(4, event_dim=1), (BATCH, 4)),
    "invconv": LayerCase(lambda: InvConv1x1(3), (BATCH, 3, 4, 4)),
    "invconv_vector": LayerCase(lambda: InvConv1x1(4, event_dim=1), (BATCH, 4)),
    "invconv_lu": LayerCase(lambda: InvConv1x1LU(4), (BATCH, 4, 3, 3)),
    "invconv_lu_vector": LayerCase(lambda: InvConv1x1LU(5), (BATCH, 5)),
    "reverse": LayerCase(Reverse, (BATCH, 3, 4, 4)),
    "reverse_vector": LayerCase(Reverse, (BATCH, 5)),
    "shuffle": LayerCase(lambda: Shuffle(5), (BATCH, 5, 2, 2)),
    "shuffle_vector": LayerCase(lambda: Shuffle(5), (BATCH, 5)),
    "diagonal_scale": LayerCase(lambda: DiagonalScale((2, 3, 3)), (BATCH, 2, 3, 3)),
    "squeeze": LayerCase(Squeeze, (BATCH, 2, 4, 4)),
    "unsqueeze": LayerCase(Unsqueeze, (BATCH, 8, 2, 2)),
    # affine and additive couplings
    **{
        f"affine_{mask}{parity}_{scale_fn}_{net}": _affine(mask, parity, scale_fn, net)
        for mask in ("channel", "checkerboard") for parity in (0, 1)
        for scale_fn in ("sigmoid", "tanh") for net in ("glow", "resnet")
    },
    "affine_channel_no_actnorm": _affine("channel", 0, "sigmoid", "glow", actnorm=False),
    "affine_resnet_bounded": _affine("checkerboard", 1, "tanh", "resnet", translation_bound=2.0),
    "affine_cond_vector": _conditional((BATCH, 2)),
    "affine_cond_map": _conditional((BATCH, 2, 4, 4)),
    "affine_cond_map_pooled": _conditional((BATCH, 2, 8, 8), net="resnet"),
    "affine_cond_map_upsampled": _conditional((BATCH, 2, 2, 2)),
    "affine_vector_sigmoid": LayerCase(lambda: AffineCoupling(5, 6, event_dim=1, num_blocks=2), (BATCH, 5)),
    "affine_vector_tanh_cond": LayerCase(lambda: AffineCoupling(4, 6, parity=1, event_dim=1, scale_fn="tanh",
                                                                cond_channels=2), (BATCH, 4), (BATCH, 2)),
    "additive_channel": LayerCase(lambda: AdditiveCoupling(4, 6, mask="channel", parity=1), (BATCH, 4, 4, 4)),
    "additive_checkerboard": LayerCase(lambda: AdditiveCoupling(2, 6, mask="checkerboard"), (BATCH, 2, 4, 4)),
    "additive_vector": LayerCase(lambda: AdditiveCoupling(4, 6, event_dim=1), (BATCH, 4)),
    "mlp_additive_even": LayerCase(lambda: MLPAdditiveCoupling(18, 8, 2, parity=0), (BATCH, 2, 3, 3)),
    "mlp_additive_odd": LayerCase(lambda: MLPAdditiveCoupling(18, 8, 2, parity=1), (BATCH, 2, 3, 3)),
    "vi_affine_coupling": LayerCase(lambda: VectorAffineCoupling(4, 6, context_features=2), (BATCH, 4), (BATCH, 2)),
    # spline and mixture couplings
    "spline_channel": LayerCase(lambda: SplineCoupling(3, 6, bins=4), (BATCH, 3, 2, 2)),
    "spline_checkerboard_resnet": LayerCase(lambda: SplineCoupling(2, 6, mask="checkerboard", parity=1, net="resnet",
                                                                   num_blocks=1, bins=3), (BATCH, 2, 2, 2)),
    "spline_vector_cond": LayerCase(lambda: SplineCoupling(4, 6, event_dim=1, bins=4, cond_channels=2),
                                    (BATCH, 4), (BATCH, 2)),
    "mixture_channel": LayerCase(lambda: MixtureCoupling(3, 6, components=2), (BATCH, 3, 2, 2), **_NUMERICAL),
    # Flow++'s network (gated convolutions and attention; hidden width a multiple of its 4 heads)
    "affine_checkerboard_flowpp": LayerCase(lambda: AffineCoupling(3, 8, mask="checkerboard", net="flowpp",
                                                                   num_blocks=1), (BATCH, 3, 2, 2)),
    "spline_channel_flowpp": LayerCase(lambda: SplineCoupling(3, 8, net="flowpp", num_blocks=1, bins=4),
                                       (BATCH, 3, 2, 2)),
    "mixture_checkerboard_flowpp": LayerCase(lambda: MixtureCoupling(2, 8, mask="checkerboard", net="flowpp",
                                                                     num_blocks=1, components=3),
                                             (BATCH, 2, 3, 3), **_NUMERICAL),
    "affine_channel_flowpp_no_attention": LayerCase(_flowpp_without_attention, (BATCH, 4, 3, 3)),
    "mixture_vector": LayerCase(lambda: MixtureCoupling(4, 6, event_dim=1, components=3), (BATCH, 4), **_NUMERICAL),
    # autoregressive
    "maf_vector_affine": LayerCase(lambda: MaskedAutoregressive((4,), 8), (BATCH, 4)),
    "maf_vector_spline_random_cond": LayerCase(lambda: MaskedAutoregressive((4,), 8, transformer="spline", bins=3,
                                                                            order="random", seed=3,
                                                                            context_features=2),
                                               (BATCH, 4), (BATCH, 2)),
    "maf_image": LayerCase(lambda: MaskedAutoregressive((2, 2, 2), 4, hidden_layers=1), (BATCH, 2, 2, 2)),
    "iaf_vector": LayerCase(lambda: InverseAutoregressive((4,), hidden_features=8), (BATCH, 4)),
    # continuous (exact trace, tight solver tolerance)
    "cnf_vector": LayerCase(lambda: _cnf(1), (BATCH, 3), **_NUMERICAL),
    "cnf_image": LayerCase(lambda: _cnf(3), (BATCH, 1, 2, 2), **_NUMERICAL, slow=True),
    # forward only
    "planar": LayerCase(lambda: Planar(3), (BATCH, 3)),
    "planar_cond": LayerCase(lambda: Planar(3, context_features=2), (BATCH, 3), (BATCH, 2)),
    "radial": LayerCase(lambda: Radial(3), (BATCH, 3)),
    "radial_cond": LayerCase(lambda: Radial(3, context_features=2), (BATCH, 3), (BATCH, 2)),
    # compositions
    "sequence": LayerCase(_sequence, (BATCH, 3, 4, 4)),
    "vector_sequence": LayerCase(_vector_sequence, (BATCH, 4)),
}


def _params(names):
    return [pytest.param(n, id=n, marks=[pytest.mark.slow] if LAYERS[n].slow else []) for n in names]


layer_names = pytest.mark.parametrize("name", _params(LAYERS))


def has_inverse(layer) -> bool:
    return layer.inverse_kind != "none"


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


def round_trip_atol(name, tol) -> float:
    return LAYERS[name].round_trip_atol or tol.round_trip_atol


def logdet_atol(name, tol) -> float:
    return LAYERS[name].logdet_atol or tol.logdet_atol


def assert_round_trip(layer, x, cond, atol):
    y, logdet = layer(x, cond)
    assert y.shape[0] == x.shape[0] and y.numel() == x.numel()  # same dimension D per sample
    assert logdet.shape == (x.shape[0],)
    if not has_inverse(layer):
        with pytest.raises(InverseNotAvailable, match=type(layer).__name__):
            layer.inverse(y, cond)
        return
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
    atol = round_trip_atol(name, tol)
    with torch.no_grad():
        assert_round_trip(layer, x, cond, atol)
        layer.eval()
        assert_round_trip(layer, x, cond, atol)
        assert_round_trip(layer, 2 * x, cond, atol)  # data it was not initialised on


@layer_names
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_logdet_matches_autograd_jacobian(name, direction, core_helpers, tol):
    """ladj == slogdet of the Jacobian of the flattened map, per sample, with perturbed parameters,
    for the forward at x and for the inverse at y = forward(x); samples do not influence each other."""
    layer, x, cond = prepared(name, core_helpers)
    layer.eval()
    if direction == "inverse":
        if not has_inverse(layer):
            pytest.skip(f"{name} has no inverse (checked in test_round_trip)")
        with torch.no_grad():
            x = layer(x, cond)[0]
    fn = layer if direction == "forward" else layer.inverse
    with torch.no_grad():
        _, logdet = fn(x, cond)
    expected, cross = core_helpers.jacobian_logdet(lambda v: fn(v, cond)[0], x)
    assert logdet.dtype == torch.promote_types(x.dtype, torch.float32)
    torch.testing.assert_close(logdet, expected, rtol=tol.logdet_rtol, atol=logdet_atol(name, tol))
    # an adaptive ODE solve picks one step size for the whole batch: samples touch at its tolerance
    assert cross <= (LAYERS[name].round_trip_atol or 0.0)


NON_TRIVIAL = ("affine", "sequence", "vector_sequence", "mlp", "actnorm", "spline", "mixture", "maf", "iaf", "cnf",
               "planar", "radial", "vi_")


@pytest.mark.parametrize("name", _params([n for n in LAYERS if n.startswith(NON_TRIVIAL)]))
def test_perturbation_makes_layer_non_trivial(name, core_helpers):
    """The perturbed layers used by the logdet checks are not volume preserving or identity maps."""
    layer, x, cond = prepared(name, core_helpers)
    with torch.no_grad():
        y, logdet = layer.eval()(x, cond)
    assert y.shape != x.shape or not torch.allclose(y, x)
    if not name.startswith(("mlp", "additive")):  # NICE couplings are volume preserving by design
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
        if has_inverse(layer):
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
    torch.testing.assert_close(y_eval, y_train, rtol=0, atol=round_trip_atol(name, tol))
    torch.testing.assert_close(ld_eval, ld_train, rtol=tol.logdet_rtol, atol=logdet_atol(name, tol))


@layer_names
def test_declared_event_dim_and_inverse_kind(name):
    """Every layer declares its event_dim (None: any layout) and an inverse_kind from the contract's
    list; when event_dim is set, the case's input has that many event dimensions."""
    from glowlab.core import INVERSE_KINDS

    layer, x, _ = make(name)
    assert layer.inverse_kind in INVERSE_KINDS
    assert layer.event_dim in (None, 1, 3)
    if layer.event_dim is not None:
        assert x.dim() == layer.event_dim + 1
    assert layer.inverse_is_cheap == (layer.inverse_kind == "analytic")
