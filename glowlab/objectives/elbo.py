"""The evidence lower bound of a latent-variable model (a VAE whose posterior is a flow).

The model provides ``elbo(x, context=None) -> [B]``, a per-sample estimate of
``E_q(z|x)[log p(x, z) - log q(z | x)] <= log p(x)`` in nats. The loss is ``-ELBO`` averaged over
the batch. Logged per sample: ``neg_elbo`` (nats, an upper bound on ``-log p(x)``, estimated from
the model's posterior draws) and, for images ``[B, C, H, W]``, ``bpd_bound``
(``-ELBO / (D ln 2)``, bits per dimension of the (binarised) data, a bound, not a likelihood).

Example:
    >>> import torch
    >>> class Toy(torch.nn.Module):
    ...     context_kind = None  # unconditional, declared as every model declares it
    ...     def elbo(self, x, context=None):
    ...         return -x.flatten(1).square().sum(1)
    >>> loss, metrics = ELBO().loss(Toy(), (torch.ones(2, 1, 2, 2),))
    >>> float(loss), sorted(metrics)
    (4.0, ['bpd_bound', 'neg_elbo'])

References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

from __future__ import annotations

import math

from glowlab.objectives.base import Objective, batch_context

__all__ = ["ELBO"]


class ELBO(Objective):
    """Maximise the model's ``elbo(x, context)`` (see the module docstring). Batches are ``x`` or
    ``(x, y, ...)``; ``y`` becomes the context of a class-conditional model."""

    monitor = "val/neg_elbo"

    def setup(self, model, n_bits: int | None = None) -> None:
        if not callable(getattr(model, "elbo", None)):
            raise ValueError(f"objective ELBO needs a model with elbo(x, context) -> [B] nats (a VAE); "
                             f"{type(model).__name__} has none: use objective=maximum_likelihood for a density")

    def loss(self, model, batch, step: int = 0, eval_seed: int | None = None, encode=None):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        elbo = model.elbo(x, batch_context(model, batch) if isinstance(batch, (tuple, list)) else None)
        if elbo.shape != x.shape[:1]:
            raise ValueError(f"{type(model).__name__}.elbo must return one value per sample, shape "
                             f"{tuple(x.shape[:1])}, got {tuple(elbo.shape)}")
        neg = -elbo
        metrics = {"neg_elbo": neg.detach()}
        if x.dim() == 4:
            metrics["bpd_bound"] = neg.detach() / (x[0].numel() * math.log(2.0))
        return neg.mean(), metrics
