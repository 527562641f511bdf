"""ELBO and IWAE estimates checked against a linear-Gaussian model whose exact
log-likelihood is known, and the beta-VAE loss against its closed form."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from probae import VAE, evaluate
from probae.objectives import IWAE

D, K, S = 5, 2, 0.5

# The poor guides here are poor on purpose; the PSIS warning they raise is tested elsewhere.
pytestmark = pytest.mark.filterwarnings("ignore:For .* too heavy-tailed to trust")


class LinearGaussian:
    r"""z ~ N(0, I_K), x | z ~ N(W z + b, s^2 I_D): log p(x) = log N(x; b, W W^T + s^2 I)."""

    def __init__(self, device, shift=0.0, stretch=1.0):
        g = torch.Generator().manual_seed(3)
        self.W = torch.randn(D, K, generator=g, dtype=torch.float64).to(device)
        self.b = torch.randn(D, generator=g, dtype=torch.float64).to(device)
        precision = torch.eye(K, dtype=torch.float64, device=device) + self.W.T @ self.W / S**2
        self.post_cov = torch.linalg.inv(precision)
        self.shift, self.stretch = shift, stretch

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(K), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, S).to_event(1), obs=x)

    def posterior_mean(self, x):
        return (x - self.b) @ self.W @ self.post_cov / S**2

    def exact_guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(self.posterior_mean(x), self.post_cov))

    def poor_guide(self, x):
        """The exact posterior's marginals, shifted and stretched: a proper but poor q."""
        scale = self.post_cov.diagonal().sqrt() * self.stretch
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.posterior_mean(x) + self.shift, scale).to_event(1))

    def log_evidence(self, x):
        cov = self.W @ self.W.T + S**2 * torch.eye(D, dtype=torch.float64, device=x.device)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)

    def data(self, n):
        z = torch.randn(n, K, dtype=torch.float64, device=self.b.device)
        return z @ self.W.T + self.b + S * torch.randn(n, D, dtype=torch.float64, device=z.device)


@pytest.mark.parametrize("num_samples", [1, 7, 100, 1000])
def test_iwae_with_exact_posterior_equals_exact_log_likelihood(device, num_samples):
    lg = LinearGaussian(device)
    x = lg.data(50)
    result = evaluate.log_likelihood(
        (lg.model, lg.exact_guide), x, num_samples=num_samples, chunk_size=64
    )
    torch.testing.assert_close(result.values, lg.log_evidence(x), rtol=0, atol=1e-9)


def test_iwae_with_poor_guide_rises_towards_exact_and_elbo_lies_below(device):
    lg = LinearGaussian(device, shift=0.7, stretch=1.8)
    x = lg.data(1000)
    exact = lg.log_evidence(x).mean().item()
    pair = (lg.model, lg.poor_guide)
    elbo = evaluate.elbo(pair, x, num_particles=200).mean().item()
    results = [
        evaluate.log_likelihood(pair, x, num_samples=k, chunk_size=500) for k in (1, 10, 100, 2000)
    ]
    estimates = [r.mean for r in results]
    gap = exact - elbo
    assert gap > 1.0  # a guide this poor leaves a visible gap
    # one sample: the IWAE bound is the ELBO, up to the Monte Carlo error of one draw per point
    one_draw_error = results[0].values.std().item() / math.sqrt(x.shape[0])
    assert abs(estimates[0] - elbo) < 5 * one_draw_error
    assert estimates[0] < estimates[1] < estimates[2] < estimates[3]
    assert estimates[3] < exact + 0.01  # a lower bound in expectation
    assert exact - estimates[3] < 0.02 * gap  # and nearly all of the gap is closed


def test_chunking_does_not_change_the_estimate(device):
    lg = LinearGaussian(device, shift=0.3, stretch=1.3)
    x = lg.data(30)
    pair = (lg.model, lg.poor_guide)
    pyro.set_rng_seed(5)
    a = evaluate.log_likelihood(pair, x, num_samples=300, chunk_size=300, batch_size=30)
    pyro.set_rng_seed(5)
    b = evaluate.log_likelihood(pair, x, num_samples=300, chunk_size=300, batch_size=30)
    c = evaluate.log_likelihood(pair, x, num_samples=300, chunk_size=7, batch_size=4)
    torch.testing.assert_close(a.values, b.values)
    # different chunking draws different samples: equal in expectation, within Monte Carlo error
    diff = a.values - c.values
    assert diff.abs().max() > 0  # the draws differ, so the check below is not vacuous
    assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(diff.numel())


@pytest.mark.parametrize("num_particles", [1, 5])
def test_iwae_objective_with_exact_posterior_is_minus_log_evidence(device, num_particles):
    lg = LinearGaussian(device)
    x = lg.data(20)
    loss = IWAE(num_particles).differentiable_loss(lg.model, lg.exact_guide, x)
    torch.testing.assert_close(loss, -lg.log_evidence(x).sum(), rtol=1e-10, atol=1e-8)


def test_log_likelihood_refuses_a_delta_guide(device):
    lg = LinearGaussian(device)

    def delta_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(lg.posterior_mean(x)).to_event(1))

    with pytest.raises(ValueError, match="Delta"):
        evaluate.log_likelihood((lg.model, delta_guide), lg.data(4), num_samples=5)


def _bernoulli_vae(device, beta):
    vae = VAE((12,), 3, beta=beta, hidden=(16,)).to(device)
    x = torch.bernoulli(torch.full((10, 12), 0.4, device=device))
    return vae, x


def _closed_form_kl(loc, scale):
    """KL(N(m, s^2) || N(0, 1)) summed over dimensions and points."""
    return 0.5 * (scale**2 + loc**2 - 1.0 - 2.0 * scale.log()).sum()


def _bernoulli_log_lik(x, logits):
    return (x * logits - F.softplus(logits)).sum()


@pytest.mark.parametrize("beta", [0.5, 1.0, 4.0])
def test_meanfield_loss_is_reconstruction_plus_beta_times_closed_form_kl(device, beta):
    vae, x = _bernoulli_vae(device, beta)
    pyro.set_rng_seed(11)
    loss = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(11)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        z = torch.distributions.Normal(loc, scale).rsample()  # the guide's draw
        expected = -_bernoulli_log_lik(x, vae.decoder(z)) + beta * _closed_form_kl(loc, scale)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("beta", [0.5, 1.0, 4.0])
def test_trace_elbo_loss_equals_reconstruction_plus_beta_kl_in_expectation(device, beta):
    vae, x = _bernoulli_vae(device, beta)
    particles = 4000
    loss = Trace_ELBO(num_particles=particles, vectorize_particles=True).loss(
        vae.model, vae.guide, x
    )
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        z = torch.distributions.Normal(loc, scale).rsample((particles,))
        logits = vae.decoder(z)
        rec = (x * logits - F.softplus(logits)).sum((-1, -2))
        log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum((-1, -2))
        log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum((-1, -2))
        kl = _closed_form_kl(loc, scale)
    expected = -rec.mean().item() + beta * kl.item()
    # Monte Carlo error of the difference: both estimators' spreads, from the draws
    spread = math.sqrt(((-rec + beta * (log_q - log_p)).var() + rec.var()).item() / particles)
    assert abs(loss - expected) < 5 * spread
    assert 5 * spread < 0.05 * abs(expected)  # the check is sharp enough to mean something


def test_elbo_ignores_beta_and_bounds_log_likelihood(device):
    vae, x = _bernoulli_vae(device, 4.0)
    pyro.set_rng_seed(2)
    elbo_beta4 = evaluate.elbo(vae, x, num_particles=500)
    vae.beta = 1.0
    pyro.set_rng_seed(2)
    elbo_beta1 = evaluate.elbo(vae, x, num_particles=500)
    torch.testing.assert_close(elbo_beta4, elbo_beta1)
    ll = evaluate.log_likelihood(vae, x, num_samples=500)
    assert (ll.values >= elbo_beta1 - 1e-4).all()


def test_default_pass_sizes_keep_each_pass_near_its_budget_and_are_what_the_defaults_use(device):
    from probae.evaluate.estimators import PASS_ELEMENTS

    for samples, size in [(1000, 784), (5000, 784), (10, 64), (100, 3072), (7, 10**7)]:
        chunk, batch = evaluate.pass_sizes(samples, size)
        assert 1 <= chunk <= samples and batch >= 1
        # one pass holds at most the budget, unless one sample of one point exceeds it
        assert chunk * batch * size <= max(PASS_ELEMENTS["cpu"], size)
        if chunk < samples:
            assert batch == 1  # a point's samples are split only when they fill a pass
    vae = VAE((6,), 2).to(device)
    x = torch.rand(30, 6, device=device).bernoulli()
    chunk, batch = evaluate.pass_sizes(300, 6, device.type)
    pyro.set_rng_seed(1)
    defaults = evaluate.log_likelihood(vae, x, num_samples=300)
    pyro.set_rng_seed(1)
    given = evaluate.log_likelihood(vae, x, num_samples=300, chunk_size=chunk, batch_size=batch)
    assert torch.equal(defaults.values, given.values)


def test_psis_of_batches_fitted_together_equals_psis_of_all_weights_at_once(device):
    from probae.evaluate.diagnostics import _psis

    vae = VAE((6,), 2).to(device)
    x = torch.rand(300, 6, device=device).bernoulli()  # 300 points: more than one PSIS group
    result = evaluate.log_likelihood(
        vae, x, num_samples=100, batch_size=7, chunk_size=40, keep_log_weights=True
    )
    khat, values = _psis(result.log_weights)
    assert torch.equal(result.khat, khat) and torch.equal(result.psis_values, values)
