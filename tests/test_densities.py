"""The Gaussian log-densities with written-out gradients (probae._densities) against
torch's Normal: values to rounding, gradients to second order, broadcasting, and the
KL registry and Pyro's handling that the subclasses inherit."""

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from probae import _densities


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_log_density_is_torchs(dtype, device):
    loc = torch.randn(6, 4, dtype=dtype, device=device)
    scale = torch.rand(6, 4, dtype=dtype, device=device) * 3 + 1e-3
    value = loc + scale * 5 * torch.randn(6, 4, dtype=dtype, device=device)
    got = _densities.Normal(loc, scale).log_prob(value)
    assert got.dtype == dtype
    torch.testing.assert_close(got, torch.distributions.Normal(loc, scale).log_prob(value))


def test_normal_log_density_gradients_are_exact_to_second_order():
    value = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loc = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(3, 4, dtype=torch.float64) + 0.2).requires_grad_()

    def log_density(value, loc, scale):
        return _densities.Normal(loc, scale, validate_args=False).log_prob(value)

    assert torch.autograd.gradcheck(log_density, (value, loc, scale))
    assert torch.autograd.gradgradcheck(log_density, (value, loc, scale))


def test_the_reparameterized_gradient_is_torchs(device):
    # d/d(loc, scale) of log q(z) at z = loc + scale * eps, through z as well
    loc = torch.randn(5, 3, device=device, requires_grad=True)
    raw = torch.randn(5, 3, device=device, requires_grad=True)
    eps = torch.randn(5, 3, device=device)
    grads = []
    for cls in (_densities.Normal, torch.distributions.Normal):
        scale = torch.nn.functional.softplus(raw)
        q = cls(loc, scale)
        grads.append(torch.autograd.grad(q.log_prob(loc + scale * eps).sum(), (loc, raw)))
    for ours, torchs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, torchs)


def test_normal_broadcasts_value_against_parameters_and_reduces_gradients(device):
    loc = torch.randn(4, device=device, requires_grad=True)
    scale = torch.rand(4, device=device).add(0.5).requires_grad_()
    value = torch.randn(7, 2, 4, device=device)
    ours = _densities.Normal(loc, scale).log_prob(value)
    reference = torch.distributions.Normal(loc, scale).log_prob(value)
    assert ours.shape == (7, 2, 4)
    torch.testing.assert_close(ours, reference)
    g_ours = torch.autograd.grad(ours.sum(), (loc, scale))
    g_ref = torch.autograd.grad(reference.sum(), (loc, scale))
    for a, b in zip(g_ours, g_ref, strict=True):
        assert a.shape == (4,)
        torch.testing.assert_close(a, b)


def test_standard_normal_log_density_and_gradient(device):
    zeros = torch.zeros(3, 5, device=device)
    value = (4 * torch.randn(2, 3, 5, device=device)).requires_grad_()
    got = _densities.StandardNormal(zeros, zeros + 1).log_prob(value)
    reference = torch.distributions.Normal(zeros, zeros + 1).log_prob(value)
    torch.testing.assert_close(got, reference)
    (grad,) = torch.autograd.grad(got.sum(), value)
    torch.testing.assert_close(grad, -value.detach())
    # a value with fewer dimensions than the batch is broadcast to the batch shape
    assert _densities.StandardNormal(zeros, zeros + 1).log_prob(value[0, 0]).shape == (3, 5)


def test_the_subclasses_keep_the_kl_registry_expand_and_sampling(device):
    loc, scale = torch.randn(4, device=device), torch.rand(4, device=device) + 0.5
    q = _densities.Normal(loc, scale).to_event(1)
    p = _densities.StandardNormal(torch.zeros(4, device=device), torch.ones(4, device=device))
    closed = kl_divergence(q, p.to_event(1))
    standard = dist.Normal(torch.zeros(4, device=device), torch.ones(4, device=device))
    reference = kl_divergence(dist.Normal(loc, scale).to_event(1), standard.to_event(1))
    torch.testing.assert_close(closed, reference)
    expanded = q.expand(torch.Size([3]))
    assert type(expanded.base_dist) is _densities.Normal and expanded.batch_shape == (3,)
    assert q.rsample((2,)).shape == (2, 4) and q.has_rsample


def test_kl_to_the_standard_normal_is_the_closed_form_with_its_gradients(device):
    loc = torch.randn(6, 3, device=device, requires_grad=True)
    scale = (torch.rand(6, 3, device=device) + 0.1).requires_grad_()
    zeros = torch.zeros(6, 3, device=device)
    ours = kl_divergence(_densities.Normal(loc, scale), _densities.StandardNormal(zeros, zeros + 1))
    reference = kl_divergence(torch.distributions.Normal(loc, scale), dist.Normal(zeros, zeros + 1))
    torch.testing.assert_close(ours, reference)
    for a, b in zip(
        torch.autograd.grad(ours.sum(), (loc, scale)),
        torch.autograd.grad(reference.sum(), (loc, scale)),
        strict=True,
    ):
        torch.testing.assert_close(a, b)
    # through Independent, as Pyro's TraceMeanField_ELBO asks for it
    event = kl_divergence(
        _densities.Normal(loc, scale).to_event(1),
        _densities.StandardNormal(zeros, zeros + 1).to_event(1),
    )
    torch.testing.assert_close(event, reference.sum(-1))


def test_kl_to_the_standard_normal_is_differentiable_twice():
    loc = torch.randn(4, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(4, dtype=torch.float64) + 0.3).requires_grad_()
    zeros = torch.zeros(4, dtype=torch.float64)

    def kl(loc, scale):
        return kl_divergence(
            _densities.Normal(loc, scale), _densities.StandardNormal(zeros, zeros + 1)
        )

    assert torch.autograd.gradcheck(kl, (loc, scale))
    assert torch.autograd.gradgradcheck(kl, (loc, scale))
