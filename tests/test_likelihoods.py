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
