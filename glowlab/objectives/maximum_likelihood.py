"""Maximum likelihood: bits/dim for quantised images, nats for continuous data, and Glow's
class-conditional objective (a classifier on the top latent, weight ``weight_y``)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from glowlab.likelihood import bits_per_dim, dequantize, hashed_uniform
from glowlab.objectives.base import Objective, batch_context

__all__ = ["MaximumLikelihood"]


class MaximumLikelihood(Objective):
    """Minimise ``-log p(x)`` (optionally plus ``weight_y`` times the classifier's cross-entropy).

    Quantised images (``n_bits`` set, batches ``(x_int [B, C, H, W], y [B])``): ``x_int`` is
    dequantised on the device (:func:`glowlab.likelihood.dequantize`, fresh noise in training, a
    fixed function of each image and ``eval_seed`` in evaluation) and the loss is the mean
    bits/dim (:func:`glowlab.likelihood.bits_per_dim`). Metrics, per image:

    * ``bpd``, and when the model has ``encode(x, context) -> (latents, ladj, log_prior)`` its parts
      ``prior_bpd`` and ``logdet_bpd`` (``bpd = prior_bpd + logdet_bpd + n_bits``);
    * class-conditional models (``num_classes > 0``, with ``class_logits``): ``accuracy`` of the
      linear classifier on the top latent, and ``bits_y`` (its cross-entropy in bits). The loss is
      ``bpd + weight_y * bits_y`` (openai/glow's ``weight_y``; 0 trains the classifier not at all).

    Continuous data (``n_bits`` None, batches ``x`` or ``(x, ...)``): the loss is the mean
    ``-log p(x)`` in nats, metric ``nll`` (nats per sample).

    Models whose ``log_prob`` is a random estimate (``log_prob_with_stderr``: FFJORD with a
    Hutchinson trace) are evaluated with the mean of ``eval_probes`` estimates per image, and the
    standard error is logged as ``bpd_stderr`` (0 where the exact trace was used).

    Args:
        weight_y: weight of the classification loss (bits) for class-conditional models.
        eval_probes: estimates averaged per image in evaluation, for such models.
        dequantization: None or ``"uniform"`` (``u ~ U(0, 1)``, :func:`glowlab.likelihood.dequantize`),
            or ``{"kind": "variational", ...}``: Flow++'s learned ``q(u | x)``
            (:func:`glowlab.data.dequantization.build_dequantizer`), trained with the model; the
            bpd is then the variational bound and ``dequant_bpd`` (``log q / (D ln 2)``) joins the
            parts: ``bpd = prior_bpd + logdet_bpd + dequant_bpd + n_bits``.

    References:
        Kingma & Dhariwal, "Glow", NeurIPS 2018, section 5 and openai/glow's ``model.py``.
    """

    monitor = "val/bpd"

    def __init__(self, weight_y: float = 0.0, eval_probes: int = 8, dequantization: dict | str | None = None):
        super().__init__()
        self.dequantization = dequantization
        self.dequantizer: nn.Module | None = None
        if isinstance(eval_probes, bool) or not isinstance(eval_probes, int) or eval_probes < 1:
            raise ValueError(f"objective.eval_probes must be a positive integer, got {eval_probes!r}")
        self.eval_probes = eval_probes
        if not weight_y >= 0:
            raise ValueError(f"objective.weight_y must be >= 0, got {weight_y!r}")
        self.weight_y = float(weight_y)
        self.n_bits: int | None = None

    def setup(self, model: nn.Module, n_bits: int | None = None) -> None:
        self.n_bits = n_bits
        if self.dequantization not in (None, "uniform", {"kind": "uniform"}):
            from glowlab.data.dequantization import build_dequantizer

            image_shape = getattr(model, "image_shape", None)
            if n_bits is None or image_shape is None:
                raise ValueError("objective.dequantization needs quantised images (data with n_bits) and an image "
                                 "model; set objective.dequantization=null")
            self.dequantizer = build_dequantizer(self.dequantization, int(image_shape[0]), n_bits)
        if self.weight_y and not model.num_classes:
            raise ValueError(f"objective.weight_y={self.weight_y} trains a classifier on the top latent, which only "
                             f"a class-conditional model has: set model.num_classes or objective.weight_y=0")

    def loss(self, model, batch, step: int = 0, eval_seed: int | None = None, encode=None):
        if self.n_bits is None:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            nll = -model.log_prob(x, batch_context(model, batch))
            return nll.mean(), {"nll": nll.detach()}
        parts, logits = self.bpd_parts(model, batch, eval_seed, encode)
        loss = parts["bpd"].mean()
        metrics = {k: v.detach() for k, v in parts.items()}
        if logits is not None:
            y = batch[1]
            bits_y = F.cross_entropy(logits.float(), y, reduction="none") / math.log(2.0)
            if self.weight_y:
                loss = loss + self.weight_y * bits_y.mean()
            metrics["bits_y"] = bits_y.detach()
            metrics["accuracy"] = (logits.argmax(1) == y).to(bits_y.dtype)
        return loss, metrics

    def bpd_parts(self, model, batch, eval_seed: int | None = None, encode=None):
        """``({"bpd", "prior_bpd", "logdet_bpd"}: [B] bits/dim, class logits or None)``; the parts
        only for models with ``encode``."""
        x_int = batch[0]
        context = batch_context(model, batch)
        if self.dequantizer is None:
            x, log_q = dequantize(x_int, self.n_bits, seed=eval_seed), None
        else:
            noise = hashed_uniform(x_int, eval_seed) if eval_seed is not None else None
            x, log_q = self.dequantizer.dequantize(x_int, noise)
        num_dims = x[0].numel()
        parts, logits = self._parts(model, x, context, eval_seed, encode)
        if log_q is not None:
            scale = num_dims * math.log(2.0)
            parts["bpd"] = parts["bpd"] + log_q / scale  # = variational_bits_per_dim(log p, log q, D, n)
            parts["dequant_bpd"] = log_q.detach() / scale
        return parts, logits

    def _parts(self, model, x, context, eval_seed, encode):
        num_dims = x[0].numel()
        estimate = getattr(model, "log_prob_with_stderr", None)
        if eval_seed is not None and estimate is not None:  # a stochastic log_prob (CNF): averaged, with its stderr
            log_p, stderr = estimate(x, context, num_probes=self.eval_probes)
            scale = num_dims * math.log(2.0)
            return {"bpd": bits_per_dim(log_p, num_dims, self.n_bits), "bpd_stderr": stderr / scale}, None
        encode = encode or getattr(model, "encode", None)
        if encode is None:
            return {"bpd": bits_per_dim(model.log_prob(x, context), num_dims, self.n_bits)}, None
        latents, logdet, log_prior = encode(x, context)
        scale = num_dims * math.log(2.0)
        parts = {"bpd": bits_per_dim(log_prior + logdet, num_dims, self.n_bits),
                 "prior_bpd": -log_prior.detach() / scale, "logdet_bpd": -logdet.detach() / scale}
        logits = None
        if model.num_classes and hasattr(model, "class_logits"):
            logits = model.class_logits(latents[-1])
        return parts, logits
