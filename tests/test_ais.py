"""Annealed importance sampling and BDMC checked against linear-Gaussian models whose
exact log-likelihood is known, and the HMC transition against a closed-form 2-D
posterior and the algebra of its acceptance rule."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from test_estimators import LinearGaussian

from probae import AE, VAE, evaluate, priors
from probae.evaluate import ais as ais_module
from probae.evaluate.ais import _Path, hmc_transition, leapfrog, log_accept_prob

FAST = dict(transition="hmc", num_leapfrog=3, warmup=30)


def test_ais_from_the_exact_posterior_is_exact_for_any_number_of_steps(device):
    lg = LinearGaussian(device)
    x = lg.data(20)
    for steps in (1, 2, 15):
        result = evaluate.log_likelihood(
            (lg.model, lg.exact_guide), x, method="ais", num_chains=3, steps=steps, warmup=0
        )
        torch.testing.assert_close(result.values, lg.log_evidence(x), rtol=0, atol=1e-9)
        assert torch.allclose(result.ess, result.ess.new_tensor(3.0))


def test_ais_converges_to_the_exact_log_likelihood_as_steps_grow(device):
    torch.manual_seed(0)
    lg = LinearGaussian(device, shift=0.7, stretch=1.8)
    x = lg.data(20)
    exact = lg.log_evidence(x).mean().item()
    pair = (lg.model, lg.poor_guide)
    errors = []
    for steps in (1, 100):
        result = evaluate.log_likelihood(pair, x, method="ais", num_chains=8, steps=steps, **FAST)
        assert isinstance(result, evaluate.LogLikelihood)
        errors.append(exact - result.mean)
    # One step is IWAE with 8 samples, well below; 100 steps close the gap.
    assert errors[0] > 0.2
    assert abs(errors[1]) < min(0.1, errors[0] / 3)
    assert 0.4 < result.acceptance < 0.95
    assert ((result.ess >= 1 - 1e-6) & (result.ess <= 8 + 1e-6)).all()
    assert torch.isfinite(result.stderr_per_point).all()


@pytest.mark.slow
def test_ais_from_the_prior_and_with_mala_converges_too(device):
    torch.manual_seed(1)
    lg = LinearGaussian(device, shift=0.7, stretch=1.8)
    x = lg.data(20)
    exact = lg.log_evidence(x).mean().item()
    pair = (lg.model, lg.poor_guide)
    prior = evaluate.log_likelihood(
        pair, x, method="ais", num_chains=8, steps=500, start="prior", **FAST
    )
    assert abs(prior.mean - exact) < 0.06
    mala = evaluate.log_likelihood(
        pair, x, method="ais", num_chains=8, steps=200, transition="mala", warmup=30
    )
    assert abs(mala.mean - exact) < 0.05


class MixtureLinearGaussian(LinearGaussian):
    r"""k ~ Cat(pi), z | k ~ N(mu_k, I), x | z ~ N(W z + b, s^2 I), k enumerated:
    log p(x) = log sum_k pi_k N(x; W mu_k + b, W W^T + s^2 I)."""

    def __init__(self, device):
        super().__init__(device)
        self.mu = torch.tensor([[-1.5, 0.0], [1.5, 0.5]], dtype=torch.float64, device=device)
        self.pi = torch.tensor([0.3, 0.7], dtype=torch.float64, device=device)

    def model(self, x):
        from test_estimators import S

        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Categorical(self.pi), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(self.mu[k], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, S).to_event(1), obs=x)

    def log_evidence(self, x):
        from test_estimators import D, S

        cov = self.W @ self.W.T + S**2 * torch.eye(D, dtype=torch.float64, device=x.device)
        comps = dist.MultivariateNormal(self.mu @ self.W.T + self.b, cov)
        return (comps.log_prob(x.unsqueeze(-2)) + self.pi.log()).logsumexp(-1)


@pytest.mark.slow
def test_ais_sums_out_an_enumerated_mixture_component(device):
    torch.manual_seed(2)
    lg = MixtureLinearGaussian(device)
    x = lg.data(20)
    exact = lg.log_evidence(x).mean().item()
    pair = (lg.model, lg.poor_guide)
    result = evaluate.log_likelihood(pair, x, method="ais", num_chains=8, steps=150, **FAST)
    assert abs(result.mean - exact) < 0.05


def test_bdmc_bounds_bracket_the_exact_log_likelihood_and_the_gap_shrinks(device):
    torch.manual_seed(3)
    lg = LinearGaussian(device, shift=0.7, stretch=1.8)
    result = evaluate.bdmc(
        (lg.model, lg.poor_guide),
        num_points=30,
        steps=[3, 60],
        x_shape=(5,),
        dtype=torch.float64,
        device=device,
        **FAST,
    )
    exact = lg.log_evidence(result.x).mean().item()
    lower, upper = result.lower_mean, result.upper_mean
    assert lower[0] < lower[1] <= exact + 0.02
    assert upper[0] > upper[1] >= exact - 0.02
    assert result.gap[0] > 1.0 and result.gap[0] > 3 * result.gap[1] > 0
    assert "gap" in str(result)


def _two_d_path(device, num_chains):
    """One data point of the linear-Gaussian model: a 2-D Gaussian posterior."""
    lg = LinearGaussian(device, shift=0.7, stretch=1.8)
    x = lg.data(1)
    path = _Path(lg.model, lg.poor_guide, (x,), 1, num_chains, "guide")
    return lg, x, path


def test_hmc_leaves_a_two_dimensional_gaussian_posterior_invariant(device):
    torch.manual_seed(4)
    lg, x, path = _two_d_path(device, 4000)
    z = path.initial()  # a poor start: shifted and stretched
    step = x.new_full((1,), 0.25)
    accepted = []
    for _ in range(60):
        z, _, _, acc = hmc_transition(path, z, 1.0, step, num_leapfrog=3)
        accepted.append(acc.mean().item())
    samples = z[:, 0, :]
    mean, cov = lg.posterior_mean(x)[0], lg.post_cov
    torch.testing.assert_close(samples.mean(0), mean, rtol=0, atol=0.02)
    torch.testing.assert_close(samples.T.cov(), cov, rtol=0.1, atol=0.01)
    assert 0.3 < sum(accepted) / len(accepted) < 0.99  # the accept rule is at work


def test_leapfrog_is_reversible_and_volume_preserving_and_accept_rule_balances(device):
    torch.manual_seed(5)
    _, x, path = _two_d_path(device, 1)
    beta = 0.6

    def value_and_grad(z):
        return path.value_and_grad(z, beta)

    def flow(state):
        z, p = state[:2].reshape(1, 1, 2), state[2:].reshape(1, 1, 2)
        _, grad, _ = value_and_grad(z)
        z1, p1, _, _, _ = leapfrog(value_and_grad, z, p, grad, 0.3, 4)
        return torch.cat([z1.reshape(2), p1.reshape(2)])

    state = torch.randn(4, dtype=torch.float64, device=x.device)
    end = flow(state)
    back = flow(torch.cat([end[:2], -end[2:]]))
    torch.testing.assert_close(back, torch.cat([state[:2], -state[2:]]), rtol=0, atol=1e-10)
    jacobian = torch.autograd.functional.jacobian(flow, state)
    assert abs(torch.linalg.det(jacobian).item() - 1) < 1e-8

    # Detailed balance: pi(s) a(s -> s') = pi(s') a(s' -> s), pi = exp(-H).
    def log_pi(s):
        f = value_and_grad(s[:2].reshape(1, 1, 2))[0]
        return (f - 0.5 * s[2:].pow(2).sum()).reshape(())

    def log_a(s, t):
        f_s = value_and_grad(s[:2].reshape(1, 1, 2))[0]
        f_t = value_and_grad(t[:2].reshape(1, 1, 2))[0]
        return log_accept_prob(f_s, s[2:].reshape(1, 1, 2), f_t, t[2:].reshape(1, 1, 2))

    forward = log_pi(state) + log_a(state, end)
    reverse_start = torch.cat([end[:2], -end[2:]])
    reverse = log_pi(reverse_start) + log_a(reverse_start, torch.cat([state[:2], -state[2:]]))
    torch.testing.assert_close(forward, reverse.reshape(forward.shape), rtol=0, atol=1e-10)


@pytest.mark.slow
def test_ais_on_a_vae_gives_a_log_likelihood_result_close_to_iwae(device):
    torch.manual_seed(6)
    vae = VAE(x_shape=(6,), z_dim=2, prior=priors.GaussianMixture(2, 3, enumerate=True)).to(device)
    x = torch.bernoulli(torch.full((10, 6), 0.4, device=device))
    iwae = evaluate.log_likelihood(vae, x, num_samples=2000, psis=False)
    result = evaluate.log_likelihood(vae, x, method="ais", num_chains=4, steps=30, **FAST)
    assert result.per_point.shape == (10,) and result.per_point.device == x.device
    # Summing out the 3 components matters by about log 3 nats; AIS at 30 steps is
    # a looser bound than IWAE at 2000 samples, but not by that much.
    assert abs(result.mean - iwae.mean) < 0.5
    assert math.isfinite(result.stderr)


def test_ais_refuses_what_it_cannot_do(device):
    lg = LinearGaussian(device)
    x = lg.data(4)
    pair = (lg.model, lg.exact_guide)
    with pytest.raises(ValueError, match="transition"):
        evaluate.log_likelihood(pair, x, method="ais", transition="gibbs")
    with pytest.raises(ValueError, match="method"):
        evaluate.log_likelihood(pair, x, method="annealing")
    with pytest.raises(TypeError, match="num_chains"):
        evaluate.log_likelihood(pair, x, num_chains=4)
    with pytest.raises(ValueError, match="steps"):
        evaluate.log_likelihood(pair, x, method="ais", steps=0)
    with pytest.raises(ValueError, match="Delta"):
        evaluate.log_likelihood(AE(x_shape=(5,), z_dim=2).to(device), x.float(), method="ais")

    def discrete_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(x.new_full((2,), 0.5)).to_event(1))

    with pytest.raises(ValueError, match="real support"):
        evaluate.log_likelihood((lg.model, discrete_guide), x, method="ais", steps=2)
    with pytest.raises(ValueError, match="x_shape"):
        evaluate.bdmc(pair, num_points=4)


def test_sigmoid_schedule_runs_from_zero_to_one_and_rises():
    betas = ais_module.sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
