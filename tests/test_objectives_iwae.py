"""The IWAE family's gradient estimators and bounds, checked against their formulas
and against the plain estimator's expectation on a linear-Gaussian model."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from test_estimators import D, K, LinearGaussian, S

import probae
from probae import VAE
from probae.objectives import CIWAE, IWAE, MIWAE, PIWAE, DReGIWAE, StickingTheLandingIWAE, make_elbo


class Encoder(torch.nn.Module):
    """q(z|x) = N(A x + c, diag(exp(s))^2), a poor guide with gradients to check."""

    def __init__(self, lg):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        dtype, device = lg.W.dtype, lg.W.device
        self.A = torch.nn.Parameter(0.3 * torch.randn(D, K, generator=g, dtype=dtype).to(device))
        self.c = torch.nn.Parameter(torch.full((K,), 0.2, dtype=dtype, device=device))
        self.s = torch.nn.Parameter(torch.full((K,), -0.5, dtype=dtype, device=device))
        self.lg, self.draws = lg, []

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x @ self.A + self.c, self.s.exp()).to_event(1))
        self.draws.append(z)

    def model(self, x):
        self.lg.model(x)


def _mean_and_spread(elbo, enc, x, batches):
    """The gradient of the loss averaged over ``batches`` batches of copies of one point,
    with the spread of the per-batch means."""
    grads = []
    for _ in range(batches):
        loss = elbo.differentiable_loss(enc.model, enc.guide, x) / x.shape[0]
        grads.append(
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(enc.parameters()))])
        )
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / math.sqrt(batches), grads.var(0)


@pytest.mark.parametrize("particles", [1, 8])
def test_dreg_is_unbiased_for_the_iwae_gradient(device, particles):
    torch.manual_seed(0)
    lg = LinearGaussian(device)
    enc = Encoder(lg)
    x = lg.data(1).expand(500, D)
    plain, plain_se, _ = _mean_and_spread(IWAE(particles), enc, x, 40)
    dreg, dreg_se, _ = _mean_and_spread(DReGIWAE(particles), enc, x, 40)
    z = (plain - dreg) / (plain_se**2 + dreg_se**2).sqrt()
    assert z.abs().max() < 4.5, z
    assert (plain.abs() > 5 * plain_se).any()  # the gradient is not just noise


def test_stl_is_unbiased_for_the_elbo_gradient(device):
    # With one particle IWAE is the ELBO, whose score term has expectation zero. (For
    # K > 1 STL is biased for the IWAE gradient, Tucker et al. 2019; DReG is not.)
    torch.manual_seed(1)
    lg = LinearGaussian(device)
    enc = Encoder(lg)
    x = lg.data(1).expand(500, D)
    plain, plain_se, _ = _mean_and_spread(IWAE(1), enc, x, 40)
    stl, stl_se, _ = _mean_and_spread(StickingTheLandingIWAE(1), enc, x, 40)
    z = (plain - stl) / (plain_se**2 + stl_se**2).sqrt()
    assert z.abs().max() < 4.5, z


def test_dreg_encoder_gradient_variance_falls_behind_the_plain_one_as_k_grows(device):
    torch.manual_seed(2)
    lg = LinearGaussian(device)
    enc = Encoder(lg)
    x = lg.data(1).expand(50, D)
    ratios = []
    for particles in (2, 64):
        _, _, plain_var = _mean_and_spread(IWAE(particles), enc, x, 30)
        _, _, dreg_var = _mean_and_spread(DReGIWAE(particles), enc, x, 30)
        ratios.append((plain_var / dreg_var).median().item())
    assert ratios[1] > 2 * ratios[0] and ratios[1] > 3, ratios


def _recorded_log_weights(enc, lg, x):
    z = enc.draws[-1]
    log_p = dist.Normal(torch.zeros_like(z), 1.0).log_prob(z).sum(-1) + dist.Normal(
        z @ lg.W.T + lg.b, S
    ).log_prob(x).sum(-1)
    log_q = dist.Normal(x @ enc.A + enc.c, enc.s.exp()).log_prob(z).sum(-1)
    return (log_p - log_q).detach()


def test_miwae_piwae_ciwae_equal_their_formulas(device):
    torch.manual_seed(3)
    lg = LinearGaussian(device)
    enc = Encoder(lg)
    x = lg.data(7)
    loss = MIWAE(12, groups=3).differentiable_loss(enc.model, enc.guide, x)
    lw = _recorded_log_weights(enc, lg, x).reshape(3, 4, 7)
    miwae = (lw.logsumexp(1) - math.log(4)).mean(0).sum()
    torch.testing.assert_close(-loss.detach(), miwae)

    loss = PIWAE(12, groups=3).differentiable_loss(enc.model, enc.guide, x)
    lw = _recorded_log_weights(enc, lg, x)
    torch.testing.assert_close(-loss.detach(), (lw.logsumexp(0) - math.log(12)).sum())

    loss = CIWAE(6, beta=0.3).differentiable_loss(enc.model, enc.guide, x)
    lw = _recorded_log_weights(enc, lg, x)
    ciwae = 0.3 * lw.mean(0) + 0.7 * (lw.logsumexp(0) - math.log(6))
    torch.testing.assert_close(-loss.detach(), ciwae.sum())


def test_miwae_and_ciwae_gradients_are_those_of_their_bounds(device):
    # Same draws, two ways: the objective's surrogate, and autograd through the
    # bound written out by hand on the recorded (reparameterized) draws.
    lg = LinearGaussian(device)
    enc = Encoder(lg)
    x = lg.data(5)
    for objective, formula in (
        (MIWAE(6, groups=2), lambda lw: (lw.reshape(2, 3, 5).logsumexp(1) - math.log(3)).mean(0)),
        (CIWAE(4, beta=0.4), lambda lw: 0.4 * lw.mean(0) + 0.6 * (lw.logsumexp(0) - math.log(4))),
    ):
        torch.manual_seed(4)
        loss = objective.differentiable_loss(enc.model, enc.guide, x)
        got = torch.autograd.grad(loss, list(enc.parameters()), retain_graph=True)
        z = enc.draws[-1]
        log_p = dist.Normal(torch.zeros_like(z), 1.0).log_prob(z).sum(-1) + dist.Normal(
            z @ lg.W.T + lg.b, S
        ).log_prob(x).sum(-1)
        log_q = dist.Normal(x @ enc.A + enc.c, enc.s.exp()).log_prob(z).sum(-1)
        want = torch.autograd.grad(-formula(log_p - log_q).sum(), list(enc.parameters()))
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)


def test_fit_trains_with_every_gradient_and_objective(device):
    from probae import data

    train = data.load("digits", "train")[:64]
    for loss, gradient, particles in (
        ("iwae", "dreg", 4),
        ("iwae", "stl", 4),
        ("miwae", None, 8),
        ("piwae", None, 8),
        ("ciwae", None, 4),
    ):
        vae = VAE(x_shape=train.x.shape[1:], z_dim=2).to(device)
        history = probae.fit(
            vae,
            train,
            epochs=1,
            batch_size=64,
            loss=loss,
            gradient=gradient,
            num_particles=particles,
            binarize="dynamic",
            seed=0,
            progress=False,
        )
        assert all(math.isfinite(v) for v in history.train_loss)


@pytest.mark.filterwarnings("ignore:Found non-auxiliary vars")
def test_bad_gradient_settings_are_refused(device):
    from probae import data

    train = data.load("digits", "train")[:64]
    vae = VAE(x_shape=train.x.shape[1:], z_dim=2).to(device)
    with pytest.raises(ValueError, match="gradient"):
        probae.fit(vae, train, epochs=1, loss="elbo", gradient="dreg", binarize="dynamic")
    with pytest.raises(ValueError, match="gradient"):
        probae.fit(vae, train, epochs=1, loss="iwae", gradient="reinforce", binarize="dynamic")
    with pytest.raises(ValueError, match="multiple of 8"):
        make_elbo("miwae", 12)
    with pytest.raises(ValueError, match="groups"):
        MIWAE(10, groups=3)
    with pytest.raises(ValueError, match="beta"):
        CIWAE(4, beta=1.5)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    x = torch.randn(4, 1, device=device)

    def score_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Gamma(x.new_ones(2), 1.0).to_event(1))
            pyro.sample("k", dist.Bernoulli(x.new_full((1,), 0.5)).to_event(1))

    with pytest.raises(ValueError, match="reparameterized"):
        DReGIWAE(3).differentiable_loss(model, score_guide, x)
