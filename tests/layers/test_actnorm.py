"""ActNorm: data-dependent initialisation statistics and the persistence of the initialised flag."""

from __future__ import annotations

import re

import pytest
import torch

from glowlab.flows import ActNorm

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")


def per_channel_stats(y: torch.Tensor):
    dims = [0] + list(range(2, y.dim()))
    return y.mean(dims), y.std(dims, unbiased=False)


@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (1, 3, 4, 4), (16, 4)], ids=["batch", "batch_of_one", "vectors"])
def test_init_gives_zero_mean_unit_std_per_channel(shape):
    """After initialisation on a batch, the output on that batch has zero mean and unit std per channel."""
    x = torch.randn(shape) * torch.tensor([0.1, 2.0, 5.0, 1.0][: shape[1]]).view(1, -1, *[1] * (len(shape) - 2))
    x = x + torch.arange(shape[1]).view(1, -1, *[1] * (len(shape) - 2))
    norm = ActNorm(shape[1])
    assert not norm.is_initialized()
    y, logdet = norm(x)
    assert norm.is_initialized()
    mean, std = per_channel_stats(y)
    torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-6)
    torch.testing.assert_close(std, torch.ones_like(std), rtol=0, atol=1e-4)  # eps=1e-6 shifts std by ~eps/std


def test_logdet_is_spatial_size_times_sum_of_log_scales():
    """logdet == H * W * sum(log_scale) for every sample, and equals -H*W*sum(log std) after init."""
    x = 3.0 * torch.randn(4, 2, 3, 5)
    norm = ActNorm(2)
    _, logdet = norm(x)
    std = x.transpose(0, 1).reshape(2, -1).std(1, unbiased=False)
    expected = -15 * torch.log(std + norm.eps).sum()
    torch.testing.assert_close(logdet, expected.expand(4))


def test_constant_channel_gives_finite_values():
    """A channel that is constant in the initialising batch gives finite outputs, logdet and inverse."""
    x = torch.randn(4, 3, 4, 4)
    x[:, 1] = 0.25
    norm = ActNorm(3)
    y, logdet = norm(x)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    assert torch.isfinite(norm.log_scale).all()
    torch.testing.assert_close(y[:, 1], torch.zeros_like(y[:, 1]))
    torch.testing.assert_close(norm.inverse(y)[0], x)


def test_single_vector_batch_gives_finite_values():
    """A batch of one ``[1, C]`` vector (std 0 in every channel) still gives finite values."""
    norm = ActNorm(3)
    y, logdet = norm(torch.randn(1, 3))
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()


def test_train_and_eval_agree_after_init():
    """Once initialised, training and eval mode give the same output and logdet on new data."""
    norm = ActNorm(3)
    norm(torch.randn(8, 3, 4, 4) + 2)
    x = torch.randn(2, 3, 4, 4)
    y_train, ld_train = norm.train()(x)
    y_eval, ld_eval = norm.eval()(x)
    assert torch.equal(y_train, y_eval) and torch.equal(ld_train, ld_eval)


def test_eval_mode_does_not_initialise():
    """A forward pass in eval mode leaves an uninitialised ActNorm at the identity."""
    norm = ActNorm(3).eval()
    x = torch.randn(2, 3, 4, 4) + 5
    y, logdet = norm(x)
    assert not norm.is_initialized()
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))


def test_second_batch_does_not_reinitialise():
    """Only the first training batch sets the statistics."""
    norm = ActNorm(3)
    norm(torch.randn(8, 3, 4, 4))
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    norm(10 * torch.randn(8, 3, 4, 4) - 4)
    for key, value in norm.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_initialized_flag_is_a_persistent_buffer():
    """The flag is saved in the state dict, so a loaded ActNorm is never re-initialised."""
    norm = ActNorm(3)
    norm(torch.randn(8, 3, 4, 4) + 1)
    state = norm.state_dict()
    assert "initialized" in state and bool(state["initialized"])
    fresh = ActNorm(3)
    fresh(torch.randn(8, 3, 4, 4) - 7)  # initialised on other data first: the load must win
    fresh.load_state_dict(state)
    assert fresh.is_initialized()
    fresh.train()(torch.randn(8, 3, 4, 4) * 9)
    assert torch.equal(fresh.loc, norm.loc) and torch.equal(fresh.log_scale, norm.log_scale)


def test_loading_an_uninitialised_state_lets_it_initialise():
    """Loading the state of an uninitialised ActNorm resets the flag: the next batch initialises."""
    norm = ActNorm(2)
    norm(torch.randn(8, 2, 3, 3))
    norm.load_state_dict(ActNorm(2).state_dict())
    assert not norm.is_initialized()
    y, _ = norm(5 * torch.randn(8, 2, 3, 3) + 3)
    mean, std = per_channel_stats(y)
    torch.testing.assert_close(mean, torch.zeros(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(std, torch.ones(2), rtol=0, atol=1e-4)


def test_statistics_are_computed_in_float64_for_low_precision_input():
    """Initialising on a float32 batch with a large offset still centres it (stats in float64)."""
    x = (1000 + 0.01 * torch.randn(64, 2, 8, 8)).float()
    norm = ActNorm(2).float()
    y, _ = norm(x)
    mean, std = per_channel_stats(y.double())
    assert mean.abs().max() < 0.05 and (std - 1).abs().max() < 0.05


@pytest.mark.parametrize(("channels", "shape"), [(3, (2, 1, 4, 4)), (3, (2, 4)), (1, (5,))])
def test_wrong_channel_count_names_the_shape(channels, shape):
    """Input with the wrong number of channels raises ValueError naming the expected channels and the shape."""
    with pytest.raises(ValueError, match=re.escape(str(tuple(shape)))) as info:
        ActNorm(channels)(torch.randn(shape))
    assert f"{channels} channels" in str(info.value)


def test_zero_channels_rejected():
    """ActNorm(0) raises ValueError naming the value."""
    with pytest.raises(ValueError, match="got 0"):
        ActNorm(0)


def test_constant_channel_scale_is_capped_and_later_data_gets_a_finite_density():
    """Issue 10 item 13: a constant channel at initialisation gets log_scale = -log(min_std + eps)
    (not -log(eps) = 13.8), so later ordinary data has a finite, moderate log-density."""
    x = torch.randn(16, 3, 4, 4)
    x[:, 1] = 0.25
    norm = ActNorm(3)
    norm(x)
    torch.testing.assert_close(norm.log_scale[1], -torch.log(torch.tensor(norm.min_std + norm.eps)))
    assert norm.log_scale.max() <= -torch.log(torch.tensor(norm.min_std)) + 1e-9
    later = torch.randn(8, 3, 4, 4)  # channel 1 is no longer constant
    y, ladj = norm(later)
    log_prob = -0.5 * (y.square() + torch.log(torch.tensor(2 * torch.pi))).flatten(1).sum(1) + ladj
    assert torch.isfinite(log_prob).all()
    assert log_prob.min() > -1e6  # with the old scale 1e6: about -1e12


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_initialisation_batch_is_refused(bad):
    """Issue 10 item 9: a first batch holding NaN/inf raises a ValueError with the count and what to
    do, and leaves the layer uninitialised (the next, finite batch initialises it)."""
    x = torch.randn(4, 3, 2, 2)
    x[0, 1, 0, 0] = bad
    x[2, 0, 1, 1] = bad
    norm = ActNorm(3)
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\).*data pipeline"):
        norm(x)
    assert not norm.is_initialized() and norm.needs_data_init()
    assert torch.equal(norm.log_scale, torch.zeros(3))
    y, _ = norm(torch.randn(4, 3, 2, 2))
    assert norm.is_initialized() and torch.isfinite(y).all()


@pytest.mark.parametrize("event_dim, shape", [(1, (2, 3, 4, 4)), (3, (2, 3))])
def test_declared_event_dim_refuses_the_other_layout(event_dim, shape):
    """ActNorm(C, event_dim=1) accepts only [B, C]; event_dim=3 only [B, C, H, W]."""
    norm = ActNorm(3, event_dim=event_dim)
    assert norm.event_dim == event_dim
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        norm(torch.randn(shape))


def _init_on_rank(rank, port, poison_rank, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)
        x = torch.randn(4, 3, 2, 2) + rank
        if rank == poison_rank:
            x[0, 0, 0, 0] = float("nan")
        norm = ActNorm(3)
        try:
            norm(x)
            results[rank] = norm.loc.detach().tolist()
        except ValueError as err:
            results[rank] = str(err)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("poison_rank", [None, 1])
def test_ddp_ranks_initialise_alike_and_refuse_non_finite_data_together(poison_rank):
    """Under DDP (2 gloo processes) both ranks get the same statistics; when one rank's batch holds a
    NaN, both raise (neither is left waiting in an all-reduce), the clean one naming the other."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_init_on_rank, args=(port, poison_rank, results), nprocs=2, join=True)
    if poison_rank is None:
        assert results[0] == results[1]
    else:
        assert "1 non-finite value(s)" in results[1]
        assert "another process" in results[0]
