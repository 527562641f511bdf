"""Likelihoods: densities against closed forms, and support errors that name the likelihood."""

import math

import pytest
import torch

from probae import likelihoods


def test_gaussian_negative_log_likelihood_is_scaled_squared_error_plus_constant(device):
    s = 0.3
    out, x = torch.randn(4, 6, device=device), torch.randn(4, 6, device=device)
    nll = -likelihoods.Gaussian(scale=s).to(device)(out, 1).log_prob(x)
    expected = ((x - out) ** 2).sum(-1) / (2 * s**2) + 6 / 2 * math.log(2 * math.pi * s**2)
    torch.testing.assert_close(nll, expected)


def test_bernoulli_reads_logits(device):
    out = torch.randn(3, 5, device=device)
    x = torch.bernoulli(torch.full((3, 5), 0.5, device=device))
    p = torch.sigmoid(out)
    expected = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(likelihoods.Bernoulli()(out, 1).log_prob(x), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_pmf_matches_the_exact_density_over_a_wide_range_of_logits(dtype, device):
    # the exact value, in float64 with log1p: x*l - softplus(l)
    logits = torch.linspace(-60, 60, 2401, dtype=torch.float64, device=device)
    x = torch.bernoulli(torch.full_like(logits, 0.5))
    exact = x * logits - (logits.clamp_min(0) + torch.log1p(torch.exp(-logits.abs())))
    got = likelihoods.Bernoulli().distribution(logits.to(dtype)).log_prob(x.to(dtype))
    eps = torch.finfo(dtype).eps
    # rounding of a value of size |l| plus the dropped log1p term, both within a few eps
    bound = 4 * eps * (1 + logits.abs())
    assert got.dtype == dtype
    assert ((got.double() - exact).abs() <= bound).all()


def test_bernoulli_log_pmf_gradients_are_exact_to_second_order():
    logits = (4 * torch.randn(3, 4, dtype=torch.float64)).requires_grad_()
    x = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)  # a relaxed x: d/dx = l

    def log_pmf(logits, x):
        return likelihoods.BernoulliLogits(logits=logits, validate_args=False).log_prob(x)

    assert torch.autograd.gradcheck(log_pmf, (logits, x))
    assert torch.autograd.gradgradcheck(log_pmf, (logits, x))


def test_bernoulli_log_pmf_broadcasts_logits_against_the_data(device):
    # IWAE: logits (K, N, D) for data (N, D); the gradient reaches each draw's logits
    logits = torch.randn(5, 3, 7, device=device, requires_grad=True)
    x = torch.bernoulli(torch.full((3, 7), 0.5, device=device))
    got = likelihoods.Bernoulli()(logits, 1).log_prob(x)
    reference = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x.expand(5, 3, 7), reduction="none"
    ).sum(-1)
    assert got.shape == (5, 3)
    torch.testing.assert_close(got, reference)
    (grad,) = torch.autograd.grad(got.sum(), logits)
    torch.testing.assert_close(grad, x - torch.sigmoid(logits.detach()))


def test_continuous_bernoulli_integrates_to_one(device):
    grid = torch.linspace(0, 1, 20001, device=device)[:, None]
    for logit in (-3.0, -0.2, 0.0, 0.7, 4.0):
        density = likelihoods.ContinuousBernoulli()(torch.full((1, 1), logit, device=device), 1)
        values = density.log_prob(grid).exp()
        assert torch.trapezoid(values, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-4)


def test_laplace_negative_log_likelihood_is_scaled_l1_error(device):
    b = 0.5
    out, x = torch.randn(2, 7, device=device), torch.randn(2, 7, device=device)
    nll = -likelihoods.Laplace(scale=b).to(device)(out, 1).log_prob(x)
    torch.testing.assert_close(nll, (x - out).abs().sum(-1) / b + 7 * math.log(2 * b))


def test_learned_scale_is_a_parameter(device):
    lik = likelihoods.Gaussian(scale=0.5, learn_scale=True).to(device)
    assert [n for n, _ in lik.named_parameters()] == ["log_scale"]
    assert lik.scale.item() == pytest.approx(0.5)
    out, x = torch.zeros(3, 2, device=device), torch.ones(3, 2, device=device)
    expected = -1 / (2 * 0.25) - math.log(2 * math.pi * 0.25) / 2  # per coordinate
    torch.testing.assert_close(
        lik(out, 1).log_prob(x), torch.full((3,), 2 * expected, device=device)
    )


@pytest.mark.parametrize(
    "likelihood, x, message",
    [
        (likelihoods.Bernoulli(), torch.tensor([[0.0, 0.3, 1.0]]), r"Bernoulli .*\{0, 1\}.*0\.3"),
        (
            likelihoods.ContinuousBernoulli(),
            torch.tensor([[0.2, 1.5]]),
            r"ContinuousBernoulli .*\[0, 1\].*1\.5",
        ),
        (
            likelihoods.Gaussian(),
            torch.tensor([[0.2, float("nan")]]),
            "Gaussian likelihood: x contains NaN",
        ),
        (
            likelihoods.Laplace(),
            torch.tensor([[1, 2]]),
            "Laplace likelihood: x must be a floating-point",
        ),
    ],
)
def test_values_outside_the_support_are_refused_by_name(likelihood, x, message, device):
    with pytest.raises((ValueError, TypeError), match=message):
        likelihood.validate(x.to(device))


def test_bad_names_and_scales():
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        likelihoods.get("poisson")
    with pytest.raises(ValueError, match="scale must be a positive number"):
        likelihoods.Gaussian(scale=-1.0)
