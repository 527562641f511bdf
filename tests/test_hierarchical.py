"""The two-layer VAE on a linear-Gaussian hierarchy, whose log-likelihood is exact:
z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, diag d^2), x | z1 ~ N(W z1 + b, s^2 I), so
x ~ N(W a + b, W (A A^T + diag d^2) W^T + s^2 I)."""

import math

import pyro
import pytest
import torch

import probae
from probae import HierarchicalVAE, evaluate, likelihoods
from probae.nets import MIN_SCALE

X, Z1, Z2, S_X = 4, 2, 1, 0.5


def _inverse_softplus(y):
    return y + math.log(-math.expm1(-y))


def _set_gaussian(net, weight, bias, scale):
    """A one-layer MLPEncoder as loc = weight @ input + bias and a constant scale."""
    linear = net.net[-1]
    k = weight.shape[0]
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[:k] = weight
        linear.bias[:k] = bias
        linear.bias[k:] = torch.tensor([_inverse_softplus(s - MIN_SCALE) for s in scale])


@pytest.fixture
def hierarchy(device):
    g = torch.Generator().manual_seed(0)
    A, a = torch.randn(Z1, Z2, generator=g), torch.randn(Z1, generator=g)
    d = torch.tensor([0.6, 0.8])
    W, b = torch.randn(X, Z1, generator=g), torch.randn(X, generator=g)
    model = HierarchicalVAE(
        (X,), (Z1, Z2), likelihood=likelihoods.Gaussian(scale=S_X), hidden=(), hidden_between=()
    )
    _set_gaussian(model.down[0], A, a, d)
    with torch.no_grad():
        model.decoder.net[-1].weight.copy_(W)
        model.decoder.net[-1].bias.copy_(b)
    C1 = A @ A.T + torch.diag(d**2)
    marginal = torch.distributions.MultivariateNormal(
        W @ a + b, W @ C1 @ W.T + S_X**2 * torch.eye(X)
    )
    # guide: q(z1|x) with the exact posterior mean and broadened marginal scales, and
    # q(z2|z1) = p(z2|z1) exactly (z2 is scalar, so a diagonal Gaussian holds it)
    P = torch.linalg.inv(torch.linalg.inv(C1) + W.T @ W / S_X**2)
    M = P @ W.T / S_X**2
    m = P @ (torch.linalg.solve(C1, a) - W.T @ b / S_X**2)
    _set_gaussian(model.encoder, M, m, 1.5 * P.diagonal().sqrt())
    precision = 1 + A.T @ torch.diag(d**-2) @ A
    gain = torch.linalg.solve(precision, A.T @ torch.diag(d**-2))
    _set_gaussian(model.up[0], gain, -gain @ a, precision.diagonal().rsqrt())
    x = marginal.sample((6,))
    return model.to(device), x.to(device), marginal.log_prob(x).to(device)


def test_the_two_layer_iwae_estimate_converges_to_the_exact_log_likelihood(hierarchy):
    model, x, log_px = hierarchy
    ll = evaluate.log_likelihood(model, x, num_samples=20000)
    assert torch.allclose(ll.values, log_px, atol=0.03)
    elbo = evaluate.elbo(model, x, num_particles=500)
    assert (elbo < log_px - 0.01).all()  # the broadened q(z1|x) leaves a gap


def test_the_two_layer_ais_estimate_matches_the_exact_log_likelihood(hierarchy):
    model, x, log_px = hierarchy
    ais = evaluate.ais_log_likelihood(model, x, num_chains=16, steps=100, warmup=20, progress=False)
    # within the run's own Monte Carlo error (the delta-method error of each point)
    error = (ais.values - log_px).mean().item()
    stderr = ais.stderr_per_point.pow(2).sum().sqrt().item() / x.shape[0]
    assert abs(error) < 3 * stderr + 0.02


def test_sites_train_save_and_sample(tmp_path, device):
    model = HierarchicalVAE((12,), (4, 2), hidden=(16,), hidden_between=(8,)).to(device)
    trace = pyro.poutine.trace(model.guide).get_trace(torch.rand(3, 12, device=device))
    assert [n for n in trace.nodes if n.startswith("z")] == ["z1", "z2"]
    x = (torch.rand(16, 12) > 0.5).float()
    probae.fit(model, x, epochs=1, batch_size=8)
    probae.save(model, tmp_path / "h")
    loaded = probae.load(tmp_path / "h").to(device)
    assert loaded.z_dims == (4, 2)
    pyro.set_rng_seed(0)
    a = evaluate.elbo(model, x)
    pyro.set_rng_seed(0)
    assert torch.equal(evaluate.elbo(loaded, x), a)
    assert model.sample(5).shape == (5, 12)
    assert model.encode(x).shape == (16, 4)
    with pytest.raises(ValueError, match="z_dims"):
        HierarchicalVAE((12,), ())


def test_the_ladder_merge_gives_the_exact_posterior_so_its_elbo_is_log_px(device):
    """With W's columns orthogonal, x carries a Gaussian likelihood message about z1,
    N(y, s^2 (W^T W)^-1) with y = (W^T W)^-1 W^T (x - b); merged with p(z1|z2) by
    precision weighting it is p(z1|z2, x) exactly, and with q(z2|x) the exact posterior
    of scalar z2 given y, the ladder guide is the posterior: every draw's log-weight
    is log p(x)."""
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(X, Z1, generator=g))
    W, b = Q * torch.tensor([1.5, 0.7]), torch.randn(X, generator=g)
    A, a, d = (
        torch.randn(Z1, Z2, generator=g),
        torch.randn(Z1, generator=g),
        torch.tensor([0.6, 0.8]),
    )
    model = HierarchicalVAE(
        (X,),
        (Z1, Z2),
        likelihood=likelihoods.Gaussian(scale=S_X),
        hidden=(),
        hidden_between=(),
        inference="ladder",
    )
    _set_gaussian(model.down[0], A, a, d)
    with torch.no_grad():
        model.decoder.net[-1].weight.copy_(W)
        model.decoder.net[-1].bias.copy_(b)
    WtW = W.T @ W
    assert torch.allclose(WtW, torch.diag(WtW.diagonal()), atol=1e-6)
    P = torch.linalg.inv(WtW) @ W.T  # y = P (x - b)
    _set_gaussian(model.encoder, P, -P @ b, S_X * WtW.diagonal().rsqrt())
    C = torch.diag(d**2) + S_X**2 * torch.linalg.inv(WtW)  # y | z2 ~ N(A z2 + a, C)
    precision = 1 + A.T @ torch.linalg.solve(C, A)
    gain = torch.linalg.solve(precision, A.T @ torch.linalg.inv(C))
    _set_gaussian(model.up[0], gain, -gain @ a, precision.diagonal().rsqrt())
    C1 = A @ A.T + torch.diag(d**2)
    marginal = torch.distributions.MultivariateNormal(
        W @ a + b, W @ C1 @ W.T + S_X**2 * torch.eye(X)
    )
    x = marginal.sample((5,))
    log_px = marginal.log_prob(x).to(device)
    model, x = model.to(device), x.to(device)
    elbo = evaluate.elbo(model, x, num_particles=64)
    assert torch.allclose(elbo, log_px, atol=1e-4)
    # the same networks under bottom-up inference are no longer the posterior
    model.inference = "bottom-up"
    assert (evaluate.elbo(model, x, num_particles=64) < elbo - 0.01).all()
