"""Under bf16 autocast the likelihood terms stay float32 and close to the fp32 values."""

from __future__ import annotations

import torch

from glowlab.models import Glow, RealNVP


def test_bf16_autocast_keeps_likelihood_in_float32():
    torch.manual_seed(0)
    for model in (Glow((3, 8, 8), levels=2, depth=2, hidden_channels=16),
                  RealNVP((3, 8, 8), levels=2, hidden_channels=8, num_blocks=1)):
        x = torch.rand(4, 3, 8, 8) - 0.5
        model.train()
        model(x)  # ActNorm init in float32
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model.eval()
        ref = model.log_prob(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            zs, logdet, log_prior = model.encode(x)
        assert logdet.dtype == torch.float32 and log_prior.dtype == torch.float32
        assert all(z.dtype == torch.float32 for z in zs)
        # only the coupling networks ran in bf16 (8 significant bits): close, not equal
        assert torch.allclose(logdet + log_prior, ref, rtol=0, atol=0.05 * x[0].numel())
        assert not torch.equal(logdet + log_prior, ref)
