"""Squeeze/Unsqueeze, channel permutations, DiagonalScale and FlowSequence: exact closed forms."""

from __future__ import annotations

import pytest
import torch

from glowlab.flows import (
    ActNorm,
    DiagonalScale,
    FlowSequence,
    Reverse,
    Shuffle,
    Squeeze,
    Unsqueeze,
    squeeze2d,
    unsqueeze2d,
)

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")


def test_squeeze_moves_each_2x2_patch_into_channels():
    """squeeze2d: out[b, 4c + 2i + j, h, w] == x[b, c, 2h + i, 2w + j]."""
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.get_default_dtype()).view(2, 3, 4, 6)
    y = squeeze2d(x)
    assert y.shape == (2, 12, 2, 3)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                assert torch.equal(y[:, 4 * c + 2 * i + j], x[:, c, i::2, j::2])
    assert torch.equal(unsqueeze2d(y), x)


@pytest.mark.parametrize("shape", [(2, 1, 3, 4), (2, 1, 4, 5), (4, 4, 4)])
def test_squeeze_rejects_odd_sizes(shape):
    """Squeezing odd H or W (or a non-4D tensor) raises ValueError naming the shape."""
    with pytest.raises(ValueError, match=str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")):
        Squeeze()(torch.zeros(shape))


def test_unsqueeze_rejects_channels_not_divisible_by_4():
    """Unsqueezing a channel count that is not a multiple of 4 raises ValueError naming the shape."""
    with pytest.raises(ValueError, match=r"\(1, 6, 2, 2\)"):
        Unsqueeze()(torch.zeros(1, 6, 2, 2))


def test_unsqueeze_is_the_inverse_of_squeeze():
    """Unsqueeze.forward == Squeeze.inverse and vice versa."""
    x = torch.randn(2, 8, 2, 2)
    assert torch.equal(Unsqueeze()(x)[0], Squeeze().inverse(x)[0])
    assert torch.equal(Unsqueeze().inverse(Unsqueeze()(x)[0])[0], x)


def test_reverse_flips_channels():
    """Reverse maps channel c to C - 1 - c."""
    x = torch.randn(2, 5, 2, 2)
    y, logdet = Reverse()(x)
    for c in range(5):
        assert torch.equal(y[:, c], x[:, 4 - c])
    assert torch.equal(logdet, torch.zeros(2))


def test_shuffle_is_a_saved_permutation():
    """Shuffle permutes channels by its buffer ``perm``; a loaded Shuffle applies the saved permutation."""
    torch.manual_seed(3)
    shuffle = Shuffle(8)
    assert sorted(shuffle.perm.tolist()) == list(range(8)) and shuffle.perm.tolist() != list(range(8))
    x = torch.randn(2, 8, 1, 1)
    assert torch.equal(shuffle(x)[0], x[:, shuffle.perm])
    torch.manual_seed(4)
    other = Shuffle(8)
    other.load_state_dict(shuffle.state_dict())
    assert torch.equal(other(x)[0], shuffle(x)[0])


def test_shuffle_rejects_wrong_channels():
    """Shuffle on input with other channels raises ValueError naming the shape."""
    with pytest.raises(ValueError, match=r"8 channels.*\(2, 4, 1, 1\)"):
        Shuffle(8)(torch.zeros(2, 4, 1, 1))


def test_diagonal_scale_closed_form():
    """DiagonalScale: y = x * exp(log_scale) per entry and logdet = sum(log_scale)."""
    layer = DiagonalScale((2, 2, 3))
    with torch.no_grad():
        layer.log_scale.copy_(torch.randn(2, 2, 3))
    x = torch.randn(4, 2, 2, 3)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x * layer.log_scale.exp())
    torch.testing.assert_close(logdet, layer.log_scale.sum().expand(4))
    with pytest.raises(ValueError, match=r"\(4, 3, 2, 2\)"):
        layer(torch.zeros(4, 3, 2, 2))


def test_flow_sequence_sums_logdets_and_inverts_in_reverse_order():
    """FlowSequence applies flows in order, sums their logdets and inverts in reverse order."""
    flows = [ActNorm(4), DiagonalScale((4, 2, 2)), Squeeze(), Reverse()]
    seq = FlowSequence(flows)
    x = torch.randn(3, 4, 2, 2) + 1
    y, logdet = seq(x)
    h, total = x, torch.zeros(3)
    for flow in flows:
        h, ld = flow(h)
        total = total + ld
    assert torch.equal(y, h)
    torch.testing.assert_close(logdet, total)
    assert len(seq) == 4 and list(seq) == flows
    torch.testing.assert_close(seq.inverse(y)[0], x)
