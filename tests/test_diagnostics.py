"""PSIS k-hat, ELBO surgery, active units, bits per dimension and ArviZ export, checked on
linear-Gaussian models where every quantity has a closed form."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from probae import VAE, evaluate, likelihoods, nets, priors

DTYPE = torch.float64


class LinearGaussian:
    r"""p(z) = N(0, I_2), p(x|z) = N(w z, s^2) with x one-dimensional, and the guide
    q(z|x) = N(c * mu(x), (k L)(k L)^T) built from the exact posterior
    N(mu(x), Sigma), Sigma = (I + w^T w / s^2)^{-1}, mu(x) = Sigma w^T x / s^2,
    L = chol(Sigma). With c = k = 1 the guide is the exact posterior."""

    def __init__(self, device, mean_factor=1.0, scale_factor=1.0):
        self.w = torch.tensor([[1.0, 0.5]], dtype=DTYPE, device=device)
        self.s = 0.5
        eye = torch.eye(2, dtype=DTYPE, device=device)
        self.sigma = torch.linalg.inv(eye + self.w.T @ self.w / self.s**2)
        self.tril = torch.linalg.cholesky(self.sigma)
        self.mean_factor, self.scale_factor = mean_factor, scale_factor
        self.marginal_variance = (self.w @ self.w.T).item() + self.s**2

    def posterior_mean(self, x):
        return self.mean_factor * (x @ self.w) @ self.sigma / self.s**2

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.w.T, self.s).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z",
                dist.MultivariateNormal(
                    self.posterior_mean(x), scale_tril=self.scale_factor * self.tril
                ),
            )

    @property
    def pair(self):
        return (self.model, self.guide)

    def log_evidence(self, x):
        """The exact log p(x) = log N(x; 0, w w^T + s^2)."""
        return -0.5 * (
            x[:, 0] ** 2 / self.marginal_variance + math.log(2 * math.pi * self.marginal_variance)
        )


def _draw_x(model, n, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=generator, dtype=DTYPE) * math.sqrt(model.marginal_variance)
    return x.to(device)


def _quantile_x(model, n, device):
    """N points at the quantiles of p(x) = N(0, v), rescaled to variance v exactly: a data
    set whose empirical distribution is as close to p(x) as N points get."""
    q = (torch.arange(n, dtype=DTYPE) + 0.5) / n
    x = math.sqrt(2.0) * torch.erfinv(2 * q - 1)
    x = x / x.std(unbiased=False) * math.sqrt(model.marginal_variance)
    return x[:, None].to(device)


# -- PSIS ------------------------------------------------------------------------------


def test_iwae_with_the_exact_posterior_is_exact_and_reliable(device):
    model = LinearGaussian(device)
    x = _draw_x(model, 60, device)
    ll = evaluate.log_likelihood(model.pair, x, num_samples=500, chunk_size=200)
    exact = model.log_evidence(x)
    assert torch.allclose(ll.values, exact, atol=1e-8)
    assert torch.allclose(ll.psis_values, exact, atol=1e-8)
    assert ll.fraction_unreliable == 0.0


def test_psis_khat_is_low_for_a_guide_wider_than_the_posterior(device):
    """q wider than p(z|x) makes the weights bounded: a light tail, k-hat below the threshold."""
    model = LinearGaussian(device, scale_factor=1.3)
    x = _draw_x(model, 80, device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no reliability warning
        ll = evaluate.log_likelihood(model.pair, x, num_samples=4000)
    assert ll.khat_threshold == pytest.approx(min(1 - 1 / math.log10(4000), 0.7))
    assert ll.fraction_unreliable <= 0.05
    assert torch.allclose(ll.values, model.log_evidence(x), atol=0.05)


def test_psis_flags_a_guide_shrunk_by_e_squared(device):
    """q with its scale shrunk by e^2 (variance by e^4) leaves the posterior's tails
    unsampled: the weights p/q grow without bound, k-hat exceeds the threshold."""
    model = LinearGaussian(device, scale_factor=math.exp(-2.0))
    x = _draw_x(model, 80, device)
    with pytest.warns(UserWarning, match="heavy-tailed"):
        ll = evaluate.log_likelihood(model.pair, x, num_samples=1000)
    assert ll.fraction_unreliable > 0.5
    assert ll.khat.shape == (80,)
    # the estimates fall short of the exact log-likelihood
    assert (ll.values < model.log_evidence(x)).float().mean() > 0.9


def test_psis_diagnostic_of_known_weights():
    """Weights w = 1/U, U uniform, have a Pareto tail of shape exactly 1."""
    generator = torch.Generator().manual_seed(0)
    u = torch.rand(4000, 20, generator=generator, dtype=DTYPE)
    khat, estimate = evaluate.psis_diagnostic(-u.log())
    assert khat.shape == estimate.shape == (20,)
    assert (khat - 1.0).abs().median() < 0.15
    # weights from a light-tailed (bounded) distribution: k-hat negative
    khat, _ = evaluate.psis_diagnostic(u.log())
    assert (khat < 0).float().mean() > 0.9
    with pytest.raises(ValueError, match="at least"):
        evaluate.psis_diagnostic(u[:10].log())


def test_log_likelihood_keeps_log_weights_and_checks_psis_arguments(device):
    model = LinearGaussian(device, scale_factor=1.3)
    x = _draw_x(model, 7, device)
    ll = evaluate.log_likelihood(model.pair, x, num_samples=40, keep_log_weights=True, psis=False)
    assert ll.khat is None and ll.log_weights.shape == (40, 7)
    assert torch.allclose(ll.values, ll.log_weights.logsumexp(0) - math.log(40))
    with pytest.raises(ValueError, match="num_samples"):
        evaluate.log_likelihood(model.pair, x, num_samples=10, psis=True)
    with pytest.raises(ValueError, match="PSIS"):
        ll.fraction_unreliable  # noqa: B018


# -- ELBO surgery ----------------------------------------------------------------------


@pytest.mark.parametrize("mean_factor", [1.0, 1.5])
def test_elbo_surgery_matches_the_gaussian_closed_forms(device, mean_factor):
    r"""With mu(x) = c Sigma w^T x / s^2 and x ~ N(0, v), the aggregate posterior is
    q(z) = N(0, A), A = c^2 Cov(mu) + Sigma, so I(x; z) = (log|A| - log|Sigma|) / 2 and
    KL(q(z) || p(z)) = (tr A - 2 - log|A|) / 2. With c = 1 (the exact posterior)
    q(z) = p(z): the marginal KL vanishes and the information is the whole KL."""
    model = LinearGaussian(device, mean_factor=mean_factor)
    x = _quantile_x(model, 1000, device)
    result = evaluate.elbo_surgery(model.pair, x, num_samples=10, batch_size=500)

    w, s, sigma = model.w, model.s, model.sigma
    cov_mu = mean_factor**2 * sigma @ w.T @ w @ sigma * model.marginal_variance / s**4
    agg = cov_mu + sigma
    information = 0.5 * (torch.logdet(agg) - torch.logdet(sigma)).item()
    marginal_kl = 0.5 * (torch.trace(agg) - 2 - torch.logdet(agg)).item()
    # the average KL over this data set, point by point in closed form
    mu = model.posterior_mean(x)
    average_kl = (
        0.5 * (torch.trace(sigma) + (mu**2).sum(-1) - 2 - torch.logdet(sigma)).mean().item()
    )
    if mean_factor == 1.0:
        assert marginal_kl == pytest.approx(0.0, abs=1e-12)
        assert information == pytest.approx(0.5 * math.log(1 + 1.25 / 0.25))

    # 1e-3: the error of N = 1000 quantile points standing for the Gaussian p(x)
    assert abs(result.average_kl - average_kl) < 4 * result.average_kl_stderr
    assert (
        abs(result.mutual_information - information) < 4 * result.mutual_information_stderr + 1e-3
    )
    assert abs(result.marginal_kl - marginal_kl) < 4 * result.marginal_kl_stderr + 1e-3
    assert result.mutual_information + result.marginal_kl == pytest.approx(
        result.average_kl, abs=1e-10
    )
    assert result.mutual_information <= result.log_num_points
    assert result.num_points == 1000 and result.num_samples == 10


def test_elbo_surgery_of_well_separated_posteriors_is_log_n_information(device):
    """Posteriors that do not overlap identify their data point: I = log N exactly, and
    KL(q(z) || p(z)) = average KL - log N."""
    n = 20

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x, 1e-3).to_event(1))

    x = torch.linspace(-2, 2, n, dtype=DTYPE, device=device)[:, None]
    result = evaluate.elbo_surgery((model, guide), x, num_samples=4)
    assert result.mutual_information == pytest.approx(math.log(n), abs=1e-9)
    kl = (0.5 * (1e-6 + x[:, 0] ** 2 - 1) - math.log(1e-3)).mean().item()
    assert result.average_kl == pytest.approx(kl, abs=4 * result.average_kl_stderr + 1e-9)


# -- active units ----------------------------------------------------------------------


class _HalfDeadEncoder(nn.Module):
    """q(z|x) = N(A x, diag(s)) with z_dim = 4; columns 1 and 3 of the map are zero and
    their scale is 1: those dimensions equal the prior N(0, 1) whatever x is."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.tensor([[1.0, 0.0, -0.5, 0.0], [0.5, 0.0, 1.0, 0.0]]))
        self.register_buffer("scale", torch.tensor([0.5, 1.0, 0.3, 1.0]))

    def forward(self, x):
        loc = x @ self.weight
        return loc, self.scale.expand_as(loc)


def test_active_units_finds_the_dimensions_dead_by_construction(device):
    vae = VAE(
        (2,),
        4,
        likelihood=likelihoods.Gaussian(1.0),
        encoder=_HalfDeadEncoder(),
        decoder=nn.Linear(4, 2),
    ).to(device)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0)).to(device)
    result = evaluate.active_units(vae, x)
    assert result.count == 2 and int(result) == 2
    assert result.active.tolist() == [True, False, True, False]
    loc = x @ vae.encoder.weight
    assert torch.allclose(result.variance, loc.var(0, unbiased=False), atol=1e-6)
    assert result.variance[1] == 0 and result.variance[3] == 0
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2, averaged over the data
    s2 = vae.encoder.scale**2
    expected = (0.5 * (s2 + loc**2 - 1 - s2.log())).mean(0)
    assert torch.allclose(result.kl, expected, atol=1e-5)
    assert result.kl[1] == 0 and result.kl[3] == 0
    assert evaluate.active_units(vae, x, threshold=100.0).count == 0


def test_active_units_kl_against_a_mixture_prior_is_the_per_dimension_marginal(device):
    """For a mixture prior the KL of dimension j is against the mixture's marginal in j,
    checked by quadrature on a fine grid."""
    prior = priors.GaussianMixture(2, 3, seed=1)
    encoder = _HalfDeadEncoder()
    encoder.weight = encoder.weight[:, :2].contiguous()
    encoder.scale = encoder.scale[:2].contiguous()
    vae = VAE((2,), 2, prior=prior, encoder=encoder, decoder=nn.Linear(2, 2))
    vae.likelihood = likelihoods.Gaussian(1.0)
    vae = vae.to(device)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(1)).to(device)
    pyro.set_rng_seed(0)
    result = evaluate.active_units(vae, x, num_samples=20000)

    grid = torch.linspace(-12, 12, 24001, dtype=DTYPE)
    step = (grid[1] - grid[0]).item()
    weights = prior.weights.detach().double().cpu()
    locs, scales = prior.locs.detach().double().cpu(), prior.scales.detach().double().cpu()
    loc = (x @ vae.encoder.weight).double().cpu()
    scale = vae.encoder.scale.double().cpu()
    expected = torch.zeros(2, dtype=DTYPE)
    for j in range(2):
        p = (
            weights[:, None]
            * torch.distributions.Normal(locs[:, j, None], scales[:, j, None]).log_prob(grid).exp()
        ).sum(0)
        for i in range(x.shape[0]):
            q = torch.distributions.Normal(loc[i, j], scale[j]).log_prob(grid).exp()
            expected[j] += (q * (q.log() - p.log())).nan_to_num().sum() * step / x.shape[0]
    assert torch.allclose(result.kl.double().cpu(), expected, atol=0.02)


def test_active_units_of_a_flow_prior_has_no_per_dimension_kl(device):
    vae = VAE((4,), 2, prior=priors.Flow(2), hidden=(8,)).to(device)
    x = torch.rand(10, 4, device=device).round()
    result = evaluate.active_units(vae, x)
    assert result.kl is None and result.variance.shape == (2,)
    with pytest.raises(ValueError, match="threshold"):
        evaluate.active_units(vae, x, threshold=-1.0)


# -- bits per dimension ----------------------------------------------------------------


def test_bits_per_dim_of_an_exact_log_likelihood(device):
    model = LinearGaussian(device)
    x = _draw_x(model, 30, device)
    exact = model.log_evidence(x).mean().item()
    assert evaluate.bits_per_dim(model.pair, x, num_samples=30) == pytest.approx(
        -exact / math.log(2), abs=1e-8
    )
    quantized = (-exact + math.log(256)) / math.log(2)
    assert evaluate.bits_per_dim(model.pair, x, num_samples=30, levels=256) == pytest.approx(
        quantized, abs=1e-8
    )
    ll = evaluate.log_likelihood(model.pair, x, num_samples=30)
    assert evaluate.bits_per_dim(model.pair, x, estimate=ll) == pytest.approx(
        -ll.mean / math.log(2)
    )
    with pytest.raises(ValueError, match="levels"):
        evaluate.bits_per_dim(model.pair, x, levels=1)
    with pytest.raises(ValueError, match="points"):
        evaluate.bits_per_dim(model.pair, x[:3], estimate=ll)


# -- ArviZ -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside arviz's matplotlib backend
def test_to_inference_data_holds_guide_draws_and_their_log_weights(device):
    import arviz
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = LinearGaussian(device)
    x = _draw_x(model, 5, device)
    idata = evaluate.to_inference_data(model.pair, x, num_samples=400)
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "point", "latent") and z.shape == (1, 400, 5, 2)
    log_weight = idata.sample_stats["log_weight"]
    assert log_weight.shape == (1, 400, 5)
    # exact posterior: every weight is p(x), and the draws' mean is mu(x)
    exact = model.log_evidence(x).cpu().numpy()
    assert abs(log_weight.values[0] - exact).max() < 1e-8
    mean = torch.as_tensor(z.values[0].mean(0))
    assert torch.allclose(mean, model.posterior_mean(x).cpu(), atol=0.15)
    assert idata.observed_data["x"].shape == (5, 1)
    lw = log_weight.stack(__sample__=("chain", "draw"))
    _, khat = arviz.psislw(lw, normalize=False)
    assert khat.shape == (5,)
    arviz.plot_posterior(idata, var_names=["z"], coords={"point": [0]})
    arviz.plot_khat(evaluate.log_likelihood(model.pair, x, num_samples=100).khat.cpu().numpy())
    plt.close("all")


# -- every prior through every diagnostic ----------------------------------------------


def _priors(z_dim, encoder):
    return {
        "standard-normal": priors.StandardNormal(z_dim),
        "mixture": priors.GaussianMixture(z_dim, 3),
        "mixture-enumerated": priors.GaussianMixture(z_dim, 3, enumerate=True),
        "vamp": priors.VampPrior(encoder, pseudo_inputs=4),
        "flow": priors.Flow(z_dim),
    }


@pytest.mark.parametrize(
    "name", ["standard-normal", "mixture", "mixture-enumerated", "vamp", "flow"]
)
def test_every_prior_goes_through_every_diagnostic(device, name):
    encoder = nets.MLPEncoder((6,), 2, hidden=(8,))
    vae = VAE((6,), 2, prior=_priors(2, encoder)[name], encoder=encoder, hidden=(8,)).to(device)
    x = torch.bernoulli(torch.full((30, 6), 0.3, device=device))
    ll = evaluate.log_likelihood(vae, x, num_samples=50, psis=False)
    assert torch.isfinite(ll.values).all()
    surgery = evaluate.elbo_surgery(vae, x, num_samples=3)
    total = surgery.mutual_information + surgery.marginal_kl
    assert total == pytest.approx(surgery.average_kl, abs=1e-4)
    assert 0 <= evaluate.active_units(vae, x).count <= 2
    assert evaluate.to_inference_data(vae, x[:4], num_samples=10).posterior["z"].shape == (
        1,
        10,
        4,
        2,
    )


def test_surgery_refuses_a_point_mass_guide(device):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(x, event_dim=1))

    with pytest.raises(ValueError, match="Delta"):
        evaluate.elbo_surgery((model, guide), torch.zeros(3, 1, device=device))
