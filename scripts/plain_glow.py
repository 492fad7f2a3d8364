"""A deliberately plain PyTorch Glow, the baseline that ``scripts/bench.py --baseline`` measures.

Same architecture as ``glowlab.models.Glow(levels, depth, hidden_channels, coupling="affine",
permutation="lu")``: per level a squeeze, ``depth`` x (actnorm, LU 1x1 conv, affine coupling with a
conv3x3-actnorm-relu-conv1x1-actnorm-relu-zeroconv3x3 network), a split with a learned conditional
Gaussian prior, and a learned top prior. It is written the straightforward way (no caching, no
fusing, the LU weight and its inverse recomputed on every call, ``torch.cat``/``chunk`` in the
couplings, ``.item()`` in ActNorm's init check), so the benchmark can show what glowlab's
optimisations buy on the same machine. It is not used by the library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def gaussian_logp(z, mean, logs):
    return (-0.5 * (LOG_2PI + 2 * logs + (z - mean) ** 2 * torch.exp(-2 * logs))).flatten(1).sum(1)


class ActNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.register_buffer("inited", torch.tensor(0))

    def forward(self, x):
        if self.inited.item() == 0 and self.training:
            with torch.no_grad():
                mean = x.mean(dim=(0, 2, 3), keepdim=True)
                std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
                self.loc.data.copy_(-mean)
                self.logs.data.copy_(-torch.log(std + 1e-6))
                self.inited.fill_(1)
        y = (x + self.loc) * torch.exp(self.logs)
        return y, x.shape[2] * x.shape[3] * self.logs.sum() * torch.ones(x.shape[0], device=x.device)

    def reverse(self, y):
        return y * torch.exp(-self.logs) - self.loc


class InvConvLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(c, c))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diag(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(c, c), -1))
        self.register_buffer("eye", torch.eye(c))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def weight(self):
        lower = self.lower * self.l_mask + self.eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x):
        w = self.weight()
        y = F.conv2d(x, w.unsqueeze(2).unsqueeze(3))
        return y, x.shape[2] * x.shape[3] * self.log_s.sum() * torch.ones(x.shape[0], device=x.device)

    def reverse(self, y):
        w_inv = self.weight().inverse()
        return F.conv2d(y, w_inv.unsqueeze(2).unsqueeze(3))


class ZeroConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv.weight.data.zero_()
        self.conv.bias.data.zero_()
        self.scale = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x):
        return self.conv(x) * torch.exp(self.scale * 3)


class NetActNorm(ActNorm):
    def forward(self, x):
        return super().forward(x)[0]


class Coupling(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c // 2, hidden, 3, padding=1, bias=False), NetActNorm(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1, bias=False), NetActNorm(hidden), nn.ReLU(),
            ZeroConv(hidden, c),
        )

    def forward(self, x):
        a, b = x.chunk(2, 1)
        t, s_raw = self.net(a).chunk(2, 1)
        s = torch.sigmoid(s_raw + 2)
        b = (b + t) * s
        return torch.cat([a, b], 1), torch.log(s).flatten(1).sum(1)

    def reverse(self, y):
        a, b = y.chunk(2, 1)
        t, s_raw = self.net(a).chunk(2, 1)
        s = torch.sigmoid(s_raw + 2)
        return torch.cat([a, b / s - t], 1)


class FlowStep(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.actnorm = ActNorm(c)
        self.invconv = InvConvLU(c)
        self.coupling = Coupling(c, hidden)

    def forward(self, x):
        x, ld1 = self.actnorm(x)
        x, ld2 = self.invconv(x)
        x, ld3 = self.coupling(x)
        return x, ld1 + ld2 + ld3

    def reverse(self, y):
        return self.actnorm.reverse(self.invconv.reverse(self.coupling.reverse(y)))


def squeeze(x):
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x):
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


class Block(nn.Module):
    def __init__(self, c, depth, hidden, split):
        super().__init__()
        c4 = c * 4
        self.steps = nn.ModuleList([FlowStep(c4, hidden) for _ in range(depth)])
        self.split = split
        self.prior = ZeroConv(c4 // 2, c4) if split else None

    def forward(self, x):
        x = squeeze(x)
        logdet = 0
        for step in self.steps:
            x, ld = step(x)
            logdet = logdet + ld
        if self.split:
            x, z = x.chunk(2, 1)
            mean, logs = self.prior(x).chunk(2, 1)
            return x, logdet, gaussian_logp(z, mean, logs)
        return x, logdet, 0

    def reverse(self, x, temperature):
        if self.split:
            mean, logs = self.prior(x).chunk(2, 1)
            z = mean + torch.exp(logs) * temperature * torch.randn_like(mean)
            x = torch.cat([x, z], 1)
        for step in reversed(self.steps):
            x = step.reverse(x)
        return unsqueeze(x)


class PlainGlow(nn.Module):
    def __init__(self, image_shape=(3, 32, 32), levels=3, depth=32, hidden_channels=512):
        super().__init__()
        c, h, w = image_shape
        self.blocks = nn.ModuleList()
        for i in range(levels):
            split = i < levels - 1
            self.blocks.append(Block(c, depth, hidden_channels, split))
            c, h, w = (c * 2 if split else c * 4), h // 2, w // 2
        self.top_shape = (c, h, w)
        self.top = nn.Parameter(torch.zeros(1, 2 * c, 1, 1))

    def log_prob(self, x):
        logdet, logp = 0, 0
        for block in self.blocks:
            x, ld, lp = block(x)
            logdet = logdet + ld
            logp = logp + lp
        mean, logs = self.top.expand(x.shape[0], -1, *x.shape[2:]).chunk(2, 1)
        return logp + gaussian_logp(x, mean, logs) + logdet

    @torch.no_grad()
    def sample(self, n, temperature=1.0):
        mean, logs = self.top.expand(n, -1, *self.top_shape[1:]).chunk(2, 1)
        x = mean + torch.exp(logs) * temperature * torch.randn_like(mean)
        for block in reversed(self.blocks):
            x = block.reverse(x, temperature)
        return x
