"""The inference gaps on a correlated linear-Gaussian model, whose posterior is known
in closed form: p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), so
p(z|x) = N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1.

The best diagonal Gaussian under KL(q || p(z|x)) has the posterior mean and the
precisions diag(S^-1) (Bishop 2006, section 10.1.2), and its KL to the posterior is
0.5 * (sum log diag(S^-1) + log det S): the approximation gap of the diagonal family.
The full-covariance family holds the posterior itself: its gap is 0. A linear
encoder holds q* exactly (the mean is linear in x, the covariance constant): its
amortization gap is 0.
"""

import pytest
import torch
from torch import nn

import probae
from probae import VAE, evaluate, likelihoods, posteriors

Z, D, S_X = 2, 5, 0.5


class LinearEncoder(nn.Module):
    """loc = A x + a, a constant scale and a constant context."""

    def __init__(self, A, a, scale, context=None):
        super().__init__()
        self.A, self.a, self.scale = nn.Parameter(A), nn.Parameter(a), nn.Parameter(scale)
        self.context = None if context is None else nn.Parameter(context)

    def forward(self, x):
        loc = x @ self.A.T + self.a
        scale = self.scale.expand_as(loc)
        if self.context is None:
            return loc, scale
        return loc, scale, self.context.expand(*loc.shape[:-1], -1)


@pytest.fixture
def problem(device):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D, Z, generator=g)
    W[:, 1] = W[:, 0] + 0.5 * W[:, 1]  # strongly correlated posterior
    b = torch.randn(D, generator=g)
    precision = torch.eye(Z) + W.T @ W / S_X**2
    S = torch.linalg.inv(precision)
    x = torch.randn(8, Z, generator=g) @ W.T + b + S_X * torch.randn(8, D, generator=g)
    log_px = torch.distributions.MultivariateNormal(b, W @ W.T + S_X**2 * torch.eye(D))
    return {
        "W": W,
        "b": b,
        "S": S,
        "precision": precision,
        "A": S @ W.T / S_X**2,  # posterior mean = A x + a
        "a": -(S @ W.T / S_X**2) @ b,
        "x": x.to(device),
        "log_px": log_px.log_prob(x).to(device),
        "diagonal_gap": 0.5 * (torch.diagonal(precision).log().sum() + torch.logdet(S)).item(),
        "device": device,
    }


def _model(problem, encoder, posterior=None):
    decoder = nn.Linear(Z, D)
    with torch.no_grad():
        decoder.weight.copy_(problem["W"])
        decoder.bias.copy_(problem["b"])
    model = VAE(
        (D,),
        Z,
        likelihood=likelihoods.Gaussian(scale=S_X),
        encoder=encoder,
        decoder=decoder,
        posterior=posterior,
    )
    return model.to(problem["device"])


def _diagonal_encoder(problem, handicap=1.0):
    scale = torch.diagonal(problem["precision"]).rsqrt()  # q*'s standard deviations
    return LinearEncoder(handicap * problem["A"], problem["a"].clone(), scale / handicap)


def _full_encoder(problem, handicap=1.0):
    L = torch.linalg.cholesky(problem["S"])
    context = L[1:, 0] if handicap == 1.0 else torch.zeros(1)
    return LinearEncoder(
        handicap * problem["A"], problem["a"].clone(), L.diagonal() / handicap, context
    )


OPTIONS = {"max_steps": 800, "learning_rate": 0.02, "check_every": 100, "num_samples": 2000}


def test_the_diagonal_familys_approximation_gap_is_the_closed_form_kl(problem):
    assert problem["diagonal_gap"] > 0.5  # a gap worth measuring
    model = _model(problem, _diagonal_encoder(problem))
    gaps = evaluate.inference_gaps(model, problem["x"], log_likelihood=problem["log_px"], **OPTIONS)
    assert gaps.approximation.mean().item() == pytest.approx(problem["diagonal_gap"], abs=0.04)
    assert (gaps.approximation - problem["diagonal_gap"]).abs().max().item() < 0.1
    # the linear encoder already outputs q*: nothing is lost to amortization
    assert gaps.amortization.abs().max().item() < 0.02
    assert torch.allclose(gaps.total, gaps.approximation + gaps.amortization)
    assert gaps.converged and "Adam" in gaps.stopping


def test_a_handicapped_encoder_shows_an_amortization_gap_and_the_same_approximation_gap(
    problem,
):
    model = _model(problem, _diagonal_encoder(problem, handicap=0.5))
    gaps = evaluate.inference_gaps(model, problem["x"], log_likelihood=problem["log_px"], **OPTIONS)
    assert gaps.amortization.min().item() > 1.0
    assert gaps.approximation.mean().item() == pytest.approx(problem["diagonal_gap"], abs=0.05)


def test_the_full_covariance_family_reaches_the_posterior_from_a_bad_start(problem):
    model = _model(problem, _full_encoder(problem, handicap=0.5), posteriors.FullCovariance())
    gaps = evaluate.inference_gaps(model, problem["x"], log_likelihood=problem["log_px"], **OPTIONS)
    # L[q*] = log p(x): the family holds the exact posterior
    assert gaps.approximation.abs().max().item() < 0.02
    assert gaps.amortization.min().item() > 1.0


def test_a_full_covariance_encoder_at_the_posterior_has_an_elbo_equal_to_log_px(problem):
    model = _model(problem, _full_encoder(problem), posteriors.FullCovariance())
    # at the exact posterior log p(x, z) - log q(z) = log p(x) for every draw
    elbo = evaluate.elbo(model, problem["x"], num_particles=16)
    assert torch.allclose(elbo, problem["log_px"], atol=1e-4)


def test_fitting_a_full_covariance_vae_reaches_log_px_and_a_diagonal_one_stops_at_the_kl(problem):
    x = problem["x"].repeat(16, 1)  # 128 points
    log_px = problem["log_px"].repeat(16)
    results = {}
    for name, posterior in (("full", posteriors.FullCovariance()), ("diagonal", None)):
        make = _full_encoder if name == "full" else _diagonal_encoder
        model = _model(problem, make(problem, handicap=0.5), posterior)
        model.decoder.requires_grad_(False)  # the model stays the one whose posterior we know
        probae.fit(
            model, x, epochs=60, batch_size=16, lr=0.02, lr_schedule="cosine", progress=False
        )
        elbo = evaluate.elbo(model, x, num_particles=200)
        results[name] = (log_px - elbo).mean().item()
    assert results["full"] == pytest.approx(0.0, abs=0.05)
    assert results["diagonal"] == pytest.approx(problem["diagonal_gap"], abs=0.06)


def test_log_px_comes_from_ais_when_not_given(problem):
    model = _model(problem, _full_encoder(problem), posteriors.FullCovariance())
    gaps = evaluate.inference_gaps(
        model,
        problem["x"][:4],
        max_steps=200,
        num_samples=200,
        ais={"num_chains": 4, "steps": 20, "warmup": 10, "progress": False},
    )
    assert torch.allclose(gaps.log_likelihood, problem["log_px"][:4], atol=0.05)


def test_bad_arguments_are_named(problem):
    model = _model(problem, _diagonal_encoder(problem))
    x = problem["x"]
    with pytest.raises(ValueError, match="log_likelihood must be a tensor of shape"):
        evaluate.inference_gaps(model, x, log_likelihood=problem["log_px"][:3])
    with pytest.raises(ValueError, match="max_steps"):
        evaluate.inference_gaps(model, x, log_likelihood=problem["log_px"], max_steps=0)
    with pytest.raises(TypeError, match="ais must be a dict"):
        evaluate.inference_gaps(model, x, ais=3)
    with pytest.raises(TypeError, match="posterior_family"):
        evaluate.inference_gaps((model.model, model.guide), x, log_likelihood=problem["log_px"])


@pytest.mark.filterwarnings("ignore:For .* the importance weights are too heavy-tailed")
@pytest.mark.parametrize("posterior", ["iaf:2", "planar:2"])
def test_a_flow_posteriors_gaps_are_finite_and_q_star_is_no_worse(posterior, device):
    x = (torch.rand(6, 10, device=device) > 0.5).float()
    model = VAE((10,), Z, hidden=(16,), posterior=posterior).to(device)
    log_px = evaluate.log_likelihood(model, x, num_samples=200).values
    gaps = evaluate.inference_gaps(
        model, x, log_likelihood=log_px, max_steps=100, check_every=50, num_samples=500
    )
    assert torch.isfinite(gaps.approximation).all() and torch.isfinite(gaps.amortization).all()
    assert gaps.amortization.mean().item() > 0  # an untrained encoder leaves room
