"""The paper's Figure 3 for one target: ``exp(−U)`` next to a histogram of a flow's samples.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from glowlab.vi import energy, plot_target_and_samples
    >>> path = Path(tempfile.mkdtemp()) / "u2.png"
    >>> plot_target_and_samples(energy("u2"), torch.randn(1000, 2), path).exists()
    True
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["plot_target_and_samples"]


def plot_target_and_samples(energy, samples: torch.Tensor, path, title: str | None = None, bins: int = 100,
                            resolution: int = 300) -> Path:
    """Write a PNG with ``exp(−U(z))`` on ``energy.plot_box`` (left) and a 2-D histogram of
    ``samples [N, 2]`` on the same box (right); returns the path. Uses matplotlib's Agg backend.

    Samples outside the box are not drawn (the histogram is of the box only).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = torch.as_tensor(samples).detach().cpu().double()
    if samples.dim() != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape [N, 2], got {tuple(samples.shape)}")
    (a1, b1), (a2, b2) = energy.plot_box
    g1 = torch.linspace(a1, b1, resolution, dtype=torch.float64)
    g2 = torch.linspace(a2, b2, resolution, dtype=torch.float64)
    z1, z2 = torch.meshgrid(g1, g2, indexing="ij")
    density = torch.exp(-energy(torch.stack([z1.reshape(-1), z2.reshape(-1)], 1))).view(resolution, resolution)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    extent = (a1, b1, a2, b2)
    axes[0].imshow(density.T.numpy(), origin="lower", extent=extent, cmap="viridis", aspect="auto")
    axes[0].set_title(f"target exp(-U), {energy.name.upper()}")
    hist = torch.histogramdd(samples, bins=[bins, bins], range=[a1, b1, a2, b2]).hist
    axes[1].imshow(hist.T.numpy(), origin="lower", extent=extent, cmap="viridis", aspect="auto")
    axes[1].set_title(title or f"samples of q ({samples.shape[0]:,})")
    for ax in axes:
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
