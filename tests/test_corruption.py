"""Corruption processes: the fractions and variances they promise, exactly or in law."""

import math

import pytest
import torch

from probae.corruption import GaussianNoise, MaskingNoise, SaltAndPepper


def _within(estimate, expected, stderr, z=5.0):
    """A z-sigma check: fails with probability below 1e-6 when the law holds."""
    assert abs(estimate - expected) < z * stderr, (estimate, expected, stderr)


def test_fixed_masking_zeroes_exactly_round_p_d_values_of_each_point(device):
    x = torch.rand(500, 64, device=device) + 1.0  # no natural zeros
    x_tilde = MaskingNoise(0.25)(x)
    zeroed = x_tilde == 0
    assert (zeroed.sum(1) == 16).all()
    assert torch.equal(x_tilde[~zeroed], x[~zeroed])
    assert x_tilde.device == x.device


def test_fixed_masking_chooses_each_position_with_probability_p(device):
    """A uniformly random subset of size pD contains each position with probability p."""
    n, d, p = 20000, 10, 0.3
    zeroed = (MaskingNoise(p)(torch.ones(n, d, device=device)) == 0).double()
    assert (zeroed.sum(1) == 3).all()
    for frequency in zeroed.mean(0).tolist():
        _within(frequency, p, math.sqrt(p * (1 - p) / n))


def test_independent_masking_zeroes_a_fraction_p_in_expectation(device):
    n, d, p = 2000, 64, 0.2
    zeroed = MaskingNoise(p, fixed=False)(torch.ones(n, d, device=device)) == 0
    _within(zeroed.double().mean().item(), p, math.sqrt(p * (1 - p) / (n * d)))
    # Independent draws: the count per point varies (Binomial(64, 0.2) has sd 3.2).
    assert zeroed.sum(1).unique().numel() > 1


def test_masking_images_counts_values_per_point():
    x = torch.ones(50, 1, 8, 8)
    x_tilde = MaskingNoise(0.5)(x)
    assert x_tilde.shape == x.shape
    assert ((x_tilde == 0).reshape(50, -1).sum(1) == 32).all()


def test_masking_at_the_ends():
    x = torch.rand(10, 7) + 1.0
    assert torch.equal(MaskingNoise(0.0)(x), x)
    assert (MaskingNoise(1.0)(x) == 0).all()


def test_gaussian_noise_has_variance_sigma_squared(device):
    sigma, n = 0.3, 400000
    x = torch.full((n // 4, 4), 0.7, device=device, dtype=torch.float64)
    noise = (GaussianNoise(sigma)(x) - x).reshape(-1)
    _within(noise.mean().item(), 0.0, sigma / math.sqrt(n))
    # The sample variance of n normals has standard error sigma^2 sqrt(2 / n).
    _within(noise.var().item(), sigma**2, sigma**2 * math.sqrt(2 / n))


def test_salt_and_pepper_sets_a_fixed_fraction_to_low_or_high(device):
    n, d, p = 4000, 20, 0.25
    x = torch.full((n, d), 0.5, device=device)
    x_tilde = SaltAndPepper(p)(x)
    changed = x_tilde != 0.5
    assert (changed.sum(1) == 5).all()
    assert set(x_tilde[changed].unique().tolist()) <= {0.0, 1.0}
    salt = (x_tilde[changed] == 1.0).double().mean().item()
    _within(salt, 0.5, math.sqrt(0.25 / (n * 5)))


def test_salt_and_pepper_custom_range():
    x = torch.zeros(100, 50)
    x_tilde = SaltAndPepper(1.0, low=-2.0, high=3.0)(x)
    assert set(x_tilde.unique().tolist()) == {-2.0, 3.0}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MaskingNoise(1.5), "p must lie in"),
        (lambda: MaskingNoise(-0.1), "p must lie in"),
        (lambda: SaltAndPepper(2), "p must lie in"),
        (lambda: SaltAndPepper(0.1, low=1.0, high=0.0), "low < high"),
        (lambda: GaussianNoise(0.0), "sigma must be a positive"),
        (lambda: GaussianNoise(float("nan")), "sigma must be a positive"),
    ],
)
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="p must be a number"):
        MaskingNoise("0.2")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        GaussianNoise(0.1)([1.0, 2.0])
    with pytest.raises(TypeError, match="floating-point"):
        MaskingNoise(0.1)(torch.ones(3, 4, dtype=torch.long))
