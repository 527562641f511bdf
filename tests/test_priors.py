"""The prior family: one contract, checked by parametrization, and the mixture's
density and moments against hand computation."""

import math

import pytest
import torch

from probae import priors

Z = 3


def _all_priors():
    return [
        priors.StandardNormal(Z),
        priors.Normal(Z),
        priors.GaussianMixture(Z, components=4),
        priors.Laplace(Z, scale=0.5),
        priors.Flat(Z),
    ]


@pytest.mark.parametrize("prior", _all_priors(), ids=lambda p: type(p).__name__)
def test_every_prior_returns_an_event_dim_one_distribution_on_the_module_device(prior, device):
    prior = prior.to(device)
    d = prior((7,))
    assert d.event_shape == (Z,) and d.batch_shape == (7,)
    z = torch.randn(7, Z, device=device)
    log_p = d.log_prob(z)
    assert log_p.shape == (7,) and log_p.device.type == device.type
    assert torch.isfinite(log_p).all()


@pytest.mark.parametrize("prior", _all_priors(), ids=lambda p: type(p).__name__)
def test_unconditional_priors_refuse_a_condition(prior):
    with pytest.raises(ValueError, match="not a conditional prior"):
        prior((2,), c=torch.zeros(2, 4))


def test_standard_normal_density_is_the_closed_form():
    z = torch.randn(5, Z)
    expected = -0.5 * (z**2).sum(-1) - 0.5 * Z * math.log(2 * math.pi)
    torch.testing.assert_close(priors.StandardNormal(Z)((5,)).log_prob(z), expected)


def test_laplace_prior_is_an_l1_penalty():
    b = 0.25
    z = torch.randn(6, Z)
    expected = -z.abs().sum(-1) / b - Z * math.log(2 * b)
    torch.testing.assert_close(priors.Laplace(Z, scale=b)((6,)).log_prob(z), expected)


def test_flat_prior_contributes_nothing():
    z = torch.randn(4, Z) * 100
    assert (priors.Flat(Z)((4,)).log_prob(z) == 0).all()


def _set_mixture(prior, device):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        prior.logits.copy_(torch.randn(prior.components, generator=g))
        prior.locs.copy_(3 * torch.randn(prior.components, Z, generator=g))
        prior.raw_scales.copy_(torch.randn(prior.components, Z, generator=g))
    return prior.to(device)


def test_gaussian_mixture_log_density_is_a_hand_computed_logsumexp(device):
    prior = _set_mixture(priors.GaussianMixture(Z, components=5), device)
    z = torch.randn(20, Z, device=device) * 3
    w = prior.logits.softmax(-1)
    m, s = prior.locs, torch.nn.functional.softplus(prior.raw_scales)
    # log N(z; m_k, diag s_k^2) for every point and component, by hand
    log_normal = (
        -0.5 * (((z[:, None, :] - m) / s) ** 2).sum(-1)
        - s.log().sum(-1)
        - 0.5 * Z * math.log(2 * math.pi)
    )
    expected = torch.logsumexp(w.log() + log_normal, dim=-1)
    torch.testing.assert_close(prior((20,)).log_prob(z), expected, rtol=1e-5, atol=1e-5)


def test_gaussian_mixture_samples_match_its_moments(device):
    prior = _set_mixture(priors.GaussianMixture(Z, components=3), device)
    n = 200_000
    samples = prior((n,)).sample()
    w = prior.weights[:, None]
    m, s = prior.locs, prior.scales
    mean = (w * m).sum(0)
    second = (w * (s**2 + m**2)).sum(0)
    var = second - mean**2
    # standard errors of the sample mean and variance (fourth moment bounded by 3 var^2 * 10)
    assert ((samples.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all()
    assert ((samples.var(0) - var).abs() < 5 * var * math.sqrt(30 / n)).all()


def test_learned_priors_move_with_the_module(device):
    prior = priors.GaussianMixture(Z, components=2).to(device, torch.float64)
    assert (
        prior((1,)).log_prob(torch.zeros(1, Z, device=device, dtype=torch.float64)).dtype
        == torch.float64
    )
    assert {p.device.type for p in prior.parameters()} == {device.type}


def test_unknown_prior_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown prior 'cauchy'"):
        priors.get("cauchy", Z)
    with pytest.raises(ValueError, match="z_dim"):
        priors.StandardNormal(0)
