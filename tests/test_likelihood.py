"""Likelihood units (glowlab.likelihood): bits/dim in closed form, n_bits reduction, dequantisation
and the inverse preprocessing for display."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.likelihood import bits_per_dim, dequantize, hashed_uniform, nats_to_bpd_offset, reduce_bits, to_image

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

N_BITS = [5, 8]
LOG_2PI = math.log(2 * math.pi)


# -- bits per dimension ------------------------------------------------------------------------

@pytest.mark.parametrize("n_bits", N_BITS)
@pytest.mark.parametrize("num_dims", [1, 784, 3072])
def test_uniform_density_on_the_cube_gives_n_bits(n_bits, num_dims, tol):
    """The uniform density on [-0.5, 0.5)^D has log p = 0, so every image costs exactly n_bits per dim."""
    bpd = bits_per_dim(torch.zeros(4), num_dims, n_bits)
    torch.testing.assert_close(bpd, torch.full((4,), float(n_bits)), rtol=tol.closed_form_rtol, atol=0)


@pytest.mark.parametrize(("n_bits", "expected"), [(5, 6.325748064736159), (8, 9.325748064736159)])
def test_standard_normal_at_the_origin_by_hand(n_bits, expected, tol):
    """D = 1, standard normal, x~ = 0: log p = -ln(2 pi)/2, so bpd = n + ln(2 pi) / (2 ln 2)
    (= n + 1.3257480647...)."""
    bpd = bits_per_dim(torch.tensor([-0.5 * LOG_2PI]), 1, n_bits)
    assert bpd.item() == pytest.approx(expected, rel=tol.closed_form_rtol)


@pytest.mark.parametrize("n_bits", N_BITS)
def test_standard_normal_image_by_hand(n_bits, tol):
    """A 3x2x2 image under N(0, I): bpd = (sum x^2/2 + D ln(2 pi)/2 + D n ln 2) / (D ln 2), per image."""
    x = torch.tensor([[0.1, -0.2, 0.3, 0.0, 0.4, -0.5, 0.25, -0.25, 0.125, 0.0, -0.375, 0.45],
                      [0.0] * 12])
    log_prob = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1)
    expected = [(0.5 * sum(v * v for v in row) + 6 * LOG_2PI + 12 * n_bits * math.log(2)) / (12 * math.log(2))
                for row in x.tolist()]
    torch.testing.assert_close(bits_per_dim(log_prob, 12, n_bits), torch.tensor(expected),
                               rtol=tol.closed_form_rtol, atol=0)


@pytest.mark.parametrize("n_bits", N_BITS)
def test_piecewise_constant_density_gives_the_exact_discrete_code_length(n_bits, tol):
    """For a density constant on each bin (p = P(bin) / bin volume), bits/dim is exactly the code
    length -log2 P(x_int) / D of the discrete distribution: the bound is tight."""
    num_dims, n_bins = 6, 2**n_bits
    probs = torch.softmax(torch.randn(num_dims, n_bins), dim=1)  # independent categorical per dimension
    x_int = torch.randint(0, n_bins, (5, num_dims))
    log_p_discrete = torch.log(probs.gather(1, x_int.T).T).sum(1)
    log_density = log_p_discrete + num_dims * n_bits * math.log(2)  # divide by the bin volume 2**(-nD)
    expected = -log_p_discrete / math.log(2) / num_dims
    torch.testing.assert_close(bits_per_dim(log_density, num_dims, n_bits), expected,
                               rtol=tol.closed_form_rtol, atol=0)


def test_bits_per_dim_is_per_image():
    """bpd is computed elementwise per image: an image's value does not depend on the rest of the batch."""
    log_prob = torch.tensor([-100.0, 50.0, 0.0, 3.0])
    together = bits_per_dim(log_prob, 16, 8)
    alone = torch.cat([bits_per_dim(lp[None], 16, 8) for lp in log_prob])
    assert together.shape == (4,) and torch.equal(together, alone)


@pytest.mark.parametrize(("in_dtype", "out_dtype"), [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                                     (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_bits_per_dim_dtype_is_float32_or_wider(in_dtype, out_dtype):
    """Half-precision log-likelihoods are promoted to float32; wider ones keep their dtype."""
    bpd = bits_per_dim(torch.tensor([-1000.0], dtype=in_dtype), 3072, 8)
    assert bpd.dtype == out_dtype
    assert bpd.item() == pytest.approx(8 + 1000 / (3072 * math.log(2)), rel=1e-3)


@pytest.mark.parametrize("n_bits", N_BITS)
def test_nats_offset_is_d_n_log2(n_bits):
    """nats_to_bpd_offset(D, n) == D * n * ln 2."""
    assert nats_to_bpd_offset(784, n_bits) == pytest.approx(784 * n_bits * math.log(2), rel=1e-15)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: bits_per_dim(torch.zeros(2), 0, 8), "num_dims.*got 0"),
    (lambda: bits_per_dim(torch.zeros(2), 10, 0), "n_bits.*got 0"),
    (lambda: bits_per_dim(torch.zeros(2), 10, 9), "n_bits.*got 9"),
    (lambda: nats_to_bpd_offset(10, 5.0), "n_bits.*got 5.0"),
    (lambda: reduce_bits(torch.zeros(2, dtype=torch.uint8), 0), "n_bits.*got 0"),
    (lambda: reduce_bits(torch.tensor([0, 256]), 5), r"\[0, 255\].*\[0, 256\]"),
    (lambda: reduce_bits(torch.tensor([-1, 3]), 5), r"\[0, 255\].*\[-1, 3\]"),
    (lambda: dequantize(torch.tensor([0, 32]), 5), r"\[0, 32\) for n_bits=5.*\[0, 32\]"),
    (lambda: dequantize(torch.tensor([-2, 3]), 8), r"\[0, 256\).*\[-2, 3\]"),
    (lambda: dequantize(torch.tensor([1]), 9), "n_bits.*got 9"),
    (lambda: to_image(torch.zeros(2), 12), "n_bits.*got 12"),
])
def test_bad_arguments_raise_value_error_naming_the_value(call, match):
    """Invalid n_bits, num_dims or pixel ranges raise ValueError with the offending value in the message."""
    with pytest.raises(ValueError, match=match):
        call()


# -- reduce_bits -------------------------------------------------------------------------------

@pytest.mark.parametrize("n_bits", [1, 5, 8])
def test_reduce_bits_drops_the_low_bits(n_bits):
    """Every 8-bit value v maps to floor(v / 2**(8 - n)), covering exactly [0, 2**n) as long integers."""
    pixels = torch.arange(256, dtype=torch.uint8)
    reduced = reduce_bits(pixels, n_bits)
    assert reduced.dtype == torch.long
    assert reduced.tolist() == [v >> (8 - n_bits) for v in range(256)]
    assert reduced.unique().tolist() == list(range(2**n_bits))


# -- dequantize --------------------------------------------------------------------------------

def bin_index(x_tilde: torch.Tensor, n_bits: int) -> torch.Tensor:
    """The bin of each model-space value, computed in float64."""
    return torch.floor((x_tilde.double() + 0.5) * 2**n_bits).long()


@pytest.mark.parametrize("n_bits", N_BITS)
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_dequantized_values_stay_in_their_own_bin(n_bits, out_dtype):
    """x~ = (x + u) / 2**n - 0.5 lies in [-0.5, 0.5) and inside the bin of x for 4M uniform draws,
    including the top pixel value and in float32 (where x + u can round up to x + 1)."""
    x_int = torch.randint(0, 2**n_bits, (2**22,))
    x_int[: 2**20] = 2**n_bits - 1
    x_tilde = dequantize(x_int, n_bits, dtype=out_dtype, generator=torch.Generator().manual_seed(0))
    assert x_tilde.dtype == out_dtype
    assert x_tilde.min() >= -0.5 and x_tilde.max() < 0.5
    assert torch.equal(bin_index(x_tilde, n_bits), x_int)


@pytest.mark.parametrize("n_bits", N_BITS)
def test_dequantization_noise_is_uniform_over_the_bin(n_bits):
    """The offset within the bin, u = (x~ + 0.5) 2**n - x, has the U(0, 1) mean 1/2 and variance 1/12."""
    x_int = torch.randint(0, 2**n_bits, (200_000,))
    x_tilde = dequantize(x_int, n_bits, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    u = (x_tilde + 0.5) * 2**n_bits - x_int
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002


@pytest.mark.parametrize("n_bits", N_BITS)
def test_dequantize_without_noise_gives_bin_centres(n_bits):
    """noise=False uses u = 1/2: x~ = (x + 1/2) / 2**n - 1/2, from -1/2 + 2**-(n+1) to 1/2 - 2**-(n+1)."""
    x_int = torch.arange(2**n_bits)
    x_tilde = dequantize(x_int, n_bits, noise=False, dtype=torch.float64)
    torch.testing.assert_close(x_tilde, (x_int.double() + 0.5) / 2**n_bits - 0.5, rtol=0, atol=0)
    assert x_tilde[0] == -0.5 + 2.0 ** -(n_bits + 1) and x_tilde[-1] == 0.5 - 2.0 ** -(n_bits + 1)


def test_dequantize_generator_makes_noise_reproducible():
    """The same generator seed gives the same noise; another seed gives other noise."""
    x_int = torch.randint(0, 32, (2, 1, 4, 4))
    draw = lambda seed: dequantize(x_int, 5, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))


def test_hashed_noise_depends_on_the_image_not_the_batch():
    """With seed=..., an image's noise is a function of (seed, image): the same whatever batch it is in,
    different for another seed, in [0, 1)."""
    images = torch.randint(0, 256, (6, 3, 4, 4))
    full = dequantize(images, 8, seed=11)
    parts = torch.cat([dequantize(images[[i]], 8, seed=11) for i in (0, 1)] + [dequantize(images[2:], 8, seed=11)])
    assert torch.equal(full, parts)
    assert not torch.equal(full, dequantize(images, 8, seed=12))
    u = hashed_uniform(images, 11)
    assert u.shape == images.shape and u.min() >= 0 and u.max() < 1
    assert torch.equal(bin_index(full, 8), images)


# -- to_image ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n_bits", N_BITS)
def test_to_image_recovers_the_pixel_levels(n_bits):
    """to_image(dequantize(x)) == x / (2**n - 1) for every level and any noise: back to [0, 1] exactly."""
    x_int = torch.arange(2**n_bits).repeat(64)
    x_tilde = dequantize(x_int, n_bits, generator=torch.Generator().manual_seed(2))
    image = to_image(x_tilde, n_bits)
    assert image.dtype == torch.float32
    torch.testing.assert_close(image, x_int.float() / (2**n_bits - 1), rtol=0, atol=0)
    assert image.min() == 0 and image.max() == 1


@pytest.mark.parametrize("n_bits", N_BITS)
def test_to_image_clamps_outside_the_cube_and_keeps_non_finite(n_bits):
    """Values outside [-0.5, 0.5) (e.g. from sampling) clamp to 0 or 1; NaN and inf stay non-finite."""
    x_tilde = torch.tensor([-3.0, -0.5, 0.5, 7.0, float("nan"), float("inf"), -float("inf")])
    image = to_image(x_tilde, n_bits)
    assert image[:4].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert torch.isnan(image[4]) and not torch.isfinite(image[5:]).any()
