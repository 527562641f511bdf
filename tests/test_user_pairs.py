"""A user's own Pyro pair: model-only latent sites, any Pyro ELBO as the loss, parameters
that must train, the sample dimension, and messages that name what they found."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import (
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
    TraceTailAdaptive_ELBO,
)
from torch import nn

import probae
from probae import evaluate, objectives
from probae._common import Pair

# -- a linear-Gaussian decoder with two latent dimensions ------------------------------

D, X, SIGMA, NU = 2, 5, 0.5, 3.0


@pytest.fixture
def linear(device):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(X, D, generator=gen)
    bias = 0.1 * torch.randn(X, generator=gen)
    z = torch.randn(8, D, generator=gen)
    x = z @ weight.T + bias + SIGMA * torch.randn(8, X, generator=gen)
    # the exact posterior under an N(0, I) prior, widened: a proposal, not the posterior
    precision = torch.eye(D) + weight.T @ weight / SIGMA**2
    cov = torch.linalg.inv(precision)
    gain = cov @ weight.T / SIGMA**2
    scale = 1.3 * cov.diagonal().sqrt()
    to = {"device": device}
    return weight.to(**to), bias.to(**to), x.to(**to), gain.to(**to), scale.to(**to)


def _likelihood(linear, z, x):
    weight, bias = linear[:2]
    pyro.sample("x", dist.Normal(z @ weight.T + bias, SIGMA).to_event(1), obs=x)


def _guide(linear):
    _, bias, _, gain, scale = linear

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x - bias) @ gain.T, scale).to_event(1))

    return guide


def _gamma_mixture_model(linear):
    """z ~ N(0, s^-1 I), s ~ Gamma(nu/2, nu/2): a multivariate Student-t prior, with the
    scale s a model site the guide does not sample."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            s = pyro.sample("s", dist.Gamma(x.new_tensor(NU / 2), NU / 2))
            scale = s.rsqrt().unsqueeze(-1).expand(*s.shape, D)
            z = pyro.sample("z", dist.Normal(torch.zeros_like(scale), scale).to_event(1))
            _likelihood(linear, z, x)

    return model


def _student_t_model(linear):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            prior = dist.MultivariateStudentT(
                x.new_tensor(NU), x.new_zeros(D), torch.eye(D, device=x.device)
            )
            _likelihood(linear, pyro.sample("z", prior), x)

    return model


def _normal_model(linear):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(D), 1.0).to_event(1))
            _likelihood(linear, z, x)

    return model


def _exact_log_px_student_t(linear):
    """log p(x) under the Student-t prior by quadrature on a fine 2-D grid (float64)."""
    weight, bias, x = (t.double().cpu() for t in linear[:3])
    grid = torch.linspace(-6, 6, 601, dtype=torch.float64)
    step = grid[1] - grid[0]
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, D)
    log_prior = dist.MultivariateStudentT(
        torch.tensor(NU, dtype=torch.float64), torch.zeros(D, dtype=torch.float64), torch.eye(D)
    ).log_prob(z)
    mean = z @ weight.T + bias
    out = [
        torch.logsumexp(dist.Normal(mean, SIGMA).log_prob(row).sum(-1) + log_prior, 0) for row in x
    ]
    return torch.stack(out) + D * step.log()


def test_student_t_as_gamma_scale_mixture_gives_the_closed_form_log_likelihood(linear):
    """The scale s is drawn from its prior (the guide has no site for it), so log p(s)
    cancels from every weight: the IWAE estimate rises to log p(x) under the marginal
    Student-t prior, the number the closed-form prior with the same nets gives."""
    x, guide = linear[2], _guide(linear)
    exact = _exact_log_px_student_t(linear).mean().item()
    mixture = evaluate.log_likelihood((_gamma_mixture_model(linear), guide), x, num_samples=4000)
    closed = evaluate.log_likelihood((_student_t_model(linear), guide), x, num_samples=4000)
    assert closed.mean == pytest.approx(exact, abs=0.02)
    assert mixture.mean == pytest.approx(exact, abs=0.03)
    # with log p(s) left in the weights the estimate was about E[log p(s)] ~ -0.8 nats off


@pytest.mark.filterwarnings("ignore:Found vars in model but not guide")
def test_model_only_site_elbo_is_the_normal_prior_elbo_plus_the_gamma_term(linear):
    r"""With s ~ Gamma(a, a) as its own proposal, E_s log N(z; 0, s^-1 I) =
    log N(z; 0, I) + D/2 (psi(a) - log a), since E[s] = 1 and E[log s] = psi(a) - log a:
    so the ELBO, and the objective fit trains, are the N(0, I) prior's plus that constant."""
    x, guide = linear[2], _guide(linear)
    a = torch.tensor(NU / 2, dtype=torch.float64)
    shift = D / 2 * (torch.digamma(a) - a.log()).item()
    mixture = evaluate.elbo((_gamma_mixture_model(linear), guide), x, num_particles=20000)
    normal = evaluate.elbo((_normal_model(linear), guide), x, num_particles=20000)
    assert mixture.mean().item() == pytest.approx(normal.mean().item() + shift, abs=0.02)

    # the training objective: the same identity for fit's loss="elbo"
    pair = Pair(_gamma_mixture_model(linear), guide, None)
    with pytest.warns(UserWarning, match=r"model sites \['s'\] are not in the guide"):
        elbo, wrapped = objectives.for_pair("elbo", 1, pair, (x,))
    many = Trace_ELBO(num_particles=20000, vectorize_particles=True, max_plate_nesting=1)
    loss = many.differentiable_loss(wrapped.model, guide, x).item() / x.shape[0]
    loss_normal = many.differentiable_loss(_normal_model(linear), guide, x).item() / x.shape[0]
    assert -loss == pytest.approx(-loss_normal + shift, abs=0.03)


def test_model_only_site_refusals_name_the_site(linear):
    x, guide = linear[2], _guide(linear)
    pair = Pair(_gamma_mixture_model(linear), guide, None)
    with pytest.raises(ValueError, match=r"meanfield.*\['s'\]"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objectives.for_pair("meanfield", 1, pair, (x,))

    logits = nn.Parameter(torch.zeros(3, device=x.device))

    def discrete(x):  # a learned discrete prior, neither guided nor enumerated
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Categorical(logits=logits))
            z = pyro.sample(
                "z", dist.Normal(k.float().unsqueeze(-1).expand(-1, D), 1.0).to_event(1)
            )
            _likelihood(linear, z, x)

    with pytest.raises(ValueError, match="model site 'k' is not in the guide"):
        objectives.for_pair("elbo", 1, Pair(discrete, guide, None), (x,))


# -- any Pyro ELBO as the loss ---------------------------------------------------------


class _ExactPosteriorPair(nn.Module):
    """A linear-Gaussian model whose guide is its exact posterior: every importance
    weight then equals p(x), so every ELBO estimator returns log p(x) on any draw."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            prior = dist.MultivariateNormal(x.new_zeros(D), torch.eye(D, device=x.device))
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ self.weight.T + self.bias, SIGMA).to_event(1), obs=x)

    def guide(self, x):
        precision = torch.eye(D, device=x.device) + self.weight.T @ self.weight / SIGMA**2
        cov = torch.linalg.inv(precision)
        loc = (x - self.bias) @ (cov @ self.weight.T / SIGMA**2).T
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

    def log_px(self, x):
        cov = self.weight @ self.weight.T + SIGMA**2 * torch.eye(X, device=x.device)
        return dist.MultivariateNormal(self.bias, cov).log_prob(x)


@pytest.mark.parametrize(
    "elbo",
    [
        Trace_ELBO(),
        TraceMeanField_ELBO(),
        TraceGraph_ELBO(),
        TraceEnum_ELBO(max_plate_nesting=1),
        RenyiELBO(alpha=0.5, num_particles=3),
        objectives.IWAE(num_particles=4),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_pyro_elbo_instance_is_the_loss_fit_reports(device, linear, elbo):
    """With the exact posterior as guide every objective is -log p(x) on any draw, so the
    loss fit reports (validation, after a zero-step update) is checked exactly."""
    pair = _ExactPosteriorPair(*linear[:2]).to(device)
    x = linear[2]
    history = probae.fit(
        pair,
        x,
        epochs=1,
        batch_size=8,
        loss=elbo,
        validation=x,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.0),
    )
    exact = -pair.log_px(x).mean().item()
    if isinstance(elbo, TraceMeanField_ELBO):
        # KL in closed form but E_q log p(x|z) by one draw: compare on the same draw
        pyro.set_rng_seed(1)
        ours = objectives.for_pair(elbo, 1, Pair(pair.model, pair.guide, pair), (x,))[0]
        pyro.set_rng_seed(2)
        value = ours.differentiable_loss(pair.model, pair.guide, x).item()
        pyro.set_rng_seed(2)
        assert value == pytest.approx(elbo.loss(pair.model, pair.guide, x), rel=1e-6)
        assert history.train_loss[0] == pytest.approx(exact, rel=0.1)
        return
    assert history.train_loss[0] == pytest.approx(exact, rel=1e-4)
    assert history.val_loss[0] == pytest.approx(exact, rel=1e-4)
    # and Pyro's own number on the same pair
    assert elbo.loss(pair.model, pair.guide, x) / 8 == pytest.approx(exact, rel=1e-4)


def test_tail_adaptive_elbo_trains_and_reports_the_elbo_of_its_draws(device, linear):
    """Pyro's TraceTailAdaptive_ELBO reports no loss (inf); fit reports the ELBO of its
    draws, here -log p(x) exactly (the guide is the posterior), and trains."""
    pair = _ExactPosteriorPair(*linear[:2]).to(device)
    before = pair.weight.detach().clone()
    elbo = TraceTailAdaptive_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    history = probae.fit(pair, linear[2], epochs=1, batch_size=8, loss=elbo, lr=1e-2)
    assert history.train_loss[0] == pytest.approx(-pair.log_px(linear[2]).mean().item(), rel=1e-2)
    probae.fit(pair, linear[2], epochs=2, batch_size=8, loss=elbo, lr=1e-2)
    assert not torch.equal(before, pair.weight.detach())


def test_enumerated_guide_with_a_non_enumerating_elbo_warns(device):
    net = nn.Linear(4, 3).to(device)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(3)))
            pyro.sample("x", dist.Normal(y.float().unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("net", net)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=net(x)), infer={"enumerate": "parallel"})

    x = torch.randn(16, 4, device=device)
    with pytest.warns(UserWarning, match=r"\['y'\] are marked for enumeration"):
        probae.fit((model, guide), x, epochs=1, loss=Trace_ELBO())
    with pytest.raises(ValueError, match=r"cannot sum out the guide's enumerated sites \['y'\]"):
        probae.fit((model, guide), x, epochs=1, loss="iwae")


# -- parameters the pair does not compute with -----------------------------------------


def _function_pair(encoder, decoder):
    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, raw = encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    return model, guide


def _nets(device):
    return nn.Linear(6, 4).to(device), nn.Linear(2, 6).to(device)


def test_lambdas_over_a_store_holding_another_models_parameters_are_refused(device):
    x = torch.randn(32, 6, device=device)
    first = _function_pair(*_nets(device))
    probae.fit(first, x, epochs=1, batch_size=32)  # the store now holds first's parameters
    encoder, decoder = _nets(device)
    second = _function_pair(encoder, decoder)
    pair = (lambda x: second[0](x), lambda x: second[1](x))
    with pytest.raises(ValueError, match="param store still holds parameters of the same names"):
        probae.fit(pair, x, epochs=1, batch_size=32)
    # after clearing the store the same pair trains its own networks
    pyro.clear_param_store()
    before = decoder.weight.detach().clone()
    probae.fit(pair, x, epochs=2, batch_size=32, lr=1e-2)
    assert not torch.equal(before, decoder.weight.detach())


def test_a_module_none_of_whose_parameters_reach_the_loss_is_refused(device):
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(3, 3)

        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(x, 1.0).to_event(1))

    with pytest.raises(ValueError, match="none of the 2 parameters"):
        probae.fit(Detached().to(device), torch.randn(8, 3, device=device), epochs=1)


# -- the sample dimension and messages -------------------------------------------------


class _MaskIndexing(nn.Module):
    """Pyro's CVAE tutorial's pattern: the model scores only the masked pixels by
    boolean-mask indexing, which does not broadcast over a leftmost sample dimension."""

    def __init__(self, broadcast: bool):
        super().__init__()
        self.decoder, self.encoder = nn.Linear(2, 6), nn.Linear(6, 4)
        self.broadcast = broadcast

    def model(self, x):
        mask = torch.arange(6, device=x.device) % 2 == 0
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            loc = self.decoder(z)
            if self.broadcast:
                fn = dist.Normal(loc, 1.0).mask(mask.expand(loc.shape)).to_event(1)
                pyro.sample("x", fn, obs=x)
            else:
                pyro.sample(
                    "x",
                    dist.Normal(loc[:, mask], 1.0).to_event(1),
                    obs=x[:, mask],
                )

    def guide(self, x):
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: evaluate.active_units(m, x),
        lambda m, x: probae.fit(m, x, epochs=1, loss="iwae", gradient="dreg"),
    ],
    ids=["active_units", "fit-iwae-dreg"],
)
def test_a_pair_that_does_not_broadcast_over_samples_is_told_what_to_change(device, call):
    """What needs draws side by side refuses such a pair in words (elbo, log_likelihood
    and fit's particles draw one at a time instead: tests/test_programs.py)."""
    x = torch.randn(8, 6, device=device)
    with pytest.raises(ValueError, match="does not broadcast over it") as info:
        call(_MaskIndexing(broadcast=False).to(device), x)
    assert "torch.where" in str(info.value) and "The sample dimension" in str(info.value)
    # the rewrite the message asks for works, and scores the same pixels
    fixed = _MaskIndexing(broadcast=True).to(device)
    assert torch.isfinite(evaluate.elbo(fixed, x)).all()
    probae.fit(fixed, x, epochs=1, loss="iwae")


def test_iwae_logs_no_plate_nesting_guess(device, linear, caplog):
    pair = _ExactPosteriorPair(*linear[:2]).to(device)
    with caplog.at_level("INFO"):
        probae.fit(pair, linear[2], epochs=1, loss="iwae", num_particles=3)
    assert "Guessed max_plate_nesting" not in caplog.text


def test_gamma_term_is_what_the_old_weights_got_wrong():
    """The size of the error the prior-proposal rule removes, for the record: the mean
    of log p(s) under Gamma(1.5, 1.5) (about -0.8 nats, per point)."""
    a = torch.tensor(NU / 2, dtype=torch.float64)
    gamma = dist.Gamma(a, a)
    draws = gamma.sample((200000,))
    mc = gamma.log_prob(draws).mean().item()
    # the negative entropy of Gamma(a, rate=a) in closed form
    closed = -(a - a.log() + torch.lgamma(a) + (1 - a) * torch.digamma(a)).item()
    assert mc == pytest.approx(closed, abs=0.01)
    assert -1.0 < closed < -0.6
    assert math.isfinite(closed)


@pytest.mark.parametrize(
    "elbo",
    [
        RenyiELBO(alpha=0.5, num_particles=3),
        RenyiELBO(alpha=0.2, num_particles=4, vectorize_particles=True, max_plate_nesting=1),
        TraceGraph_ELBO(num_particles=2),
    ],
    ids=["renyi", "renyi-vectorized", "tracegraph"],
)
def test_elbos_without_differentiable_loss_get_pyros_own_gradient(device, elbo):
    """On the same draws, the gradient fit follows is what Pyro's loss_and_grads computes."""
    encoder, decoder = _nets(device)
    model, guide = _function_pair(encoder, decoder)
    x = torch.randn(16, 6, device=device)
    objective = objectives.differentiable(elbo)
    pyro.set_rng_seed(3)
    loss = objective.differentiable_loss(model, guide, x)
    ours = torch.autograd.grad(loss, [decoder.weight, encoder.weight])
    pyro.set_rng_seed(3)
    expected = elbo.loss_and_grads(model, guide, x)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    for mine, theirs in zip(ours, [decoder.weight.grad, encoder.weight.grad], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("binarize", ["static", "dynamic"])
def test_observation_c_binarizes_the_second_argument_only(device, binarize):
    """Pyro's CVAE convention, model(xs, ys) scoring ys: observation='c' names ys."""
    seen = []
    net = nn.Linear(4, 4).to(device)

    def model(xs, ys):
        seen.append((xs.detach().clone(), ys.detach().clone()))
        pyro.module("net", net)
        with pyro.plate("data", xs.shape[0]):
            z = pyro.sample("z", dist.Normal(xs.new_zeros(4), 1.0).to_event(1))
            pyro.sample("y", dist.Bernoulli(logits=net(z + xs)).to_event(1), obs=ys)

    def guide(xs, ys):
        with pyro.plate("data", xs.shape[0]):
            pyro.sample("z", dist.Normal(xs, 1.0).to_event(1))

    gen = torch.Generator().manual_seed(0)
    xs = torch.rand(16, 4, generator=gen).to(device)
    ys = torch.rand(16, 4, generator=gen).to(device)
    probae.fit((model, guide), xs, c=ys, observation="c", binarize=binarize, epochs=2)
    for x_seen, y_seen in seen:
        assert ((y_seen == 0) | (y_seen == 1)).all()
        assert not ((x_seen == 0) | (x_seen == 1)).all()  # the condition is left as it is
    with pytest.raises(ValueError, match="binarize='static' needs c in"):
        probae.fit((model, guide), xs, c=ys - 1, observation="c", binarize="static")
    with pytest.raises(ValueError, match="observation must be"):
        probae.fit((model, guide), xs, c=ys, observation="y")
