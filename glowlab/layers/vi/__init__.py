"""Vector layers for variational inference: planar and radial flows (forward only) and a
vector affine coupling, all under the bijection contract (``event_dim = 1``), all optionally
amortised (conditioned on a ``context [B, C]`` such as an encoder's output).

References:
    D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

from glowlab.layers.vi.context import ContextHead, ForwardOnlyVectorLayer, check_context, check_features
from glowlab.layers.vi.coupling import VectorAffineCoupling
from glowlab.layers.vi.planar import Planar, planar_u_hat
from glowlab.layers.vi.radial import Radial

__all__ = ["ContextHead", "ForwardOnlyVectorLayer", "Planar", "Radial", "VectorAffineCoupling", "check_context",
           "check_features", "planar_u_hat"]
