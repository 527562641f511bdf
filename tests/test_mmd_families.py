"""RAE, WAE and InfoVAE: their penalties against direct computations, their losses
against the sum of terms by hand, training through probae.fit, and save/load."""

import itertools
import math

import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

import probae
from probae import data, likelihoods, priors, samplers
from probae.models.wae import imq_kernel, mmd

D = 64


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train")


def _batch(digits, device, n=24):
    return digits.x[:n].to(device=device, dtype=torch.float64)


def _loss(model, x):
    return Trace_ELBO().differentiable_loss(model.model, model.guide, x)


def _fixed_draws(model, draws):
    """Replaces the model's prior draws of the MMD term by ``draws``."""
    model._prior_draws = lambda n, like: draws[:n].to(like)


def test_the_mmd_is_the_unbiased_double_sum_of_the_inverse_multiquadric_kernel():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    w = torch.randn(7, 3, generator=generator, dtype=torch.float64) + 0.5
    c = 6.0

    def k(a, b):
        return c / (c + sum((a[t] - b[t]) ** 2 for t in range(3)))

    n = 7
    pairs = list(itertools.permutations(range(n), 2))
    expected = (
        sum(k(z[i], z[j]) + k(w[i], w[j]) for i, j in pairs) / (n * (n - 1))
        - 2 * sum(k(z[i], w[j]) for i in range(n) for j in range(n)) / n**2
    )
    assert float(mmd(z, w, c)) == pytest.approx(float(expected), rel=1e-12)
    assert float(imq_kernel(z[:1], z[:1], c)) == 1.0
    # particles in front: one estimate each
    stacked = mmd(torch.stack([z, w]), w, c)
    assert stacked.shape == (2,) and float(stacked[1]) == pytest.approx(
        float(mmd(w, w, c)), abs=1e-15
    )
    assert float(mmd(z[:1], w[:1], c)) == 0.0


def test_the_wae_loss_is_the_reconstruction_plus_lambda_times_the_mmd(digits, device):
    model = probae.WAE((D,), 4, weight=3.0, hidden=(32,)).to(device).double()
    x = _batch(digits, device)
    n = x.shape[0]
    draws = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _fixed_draws(model, draws)
    with torch.no_grad():
        z = model.encoder(x)
        recon = model.decoder(z)
    reconstruction = 0.5 * (x - recon).pow(2).sum(-1) + D / 2 * math.log(2 * math.pi)
    penalty = 3.0 * mmd(z, draws.to(device), model.kernel_scale)
    assert model.kernel_scale == 2 * 4
    # each point carries the batch's term: the batch loss over n is the paper's objective
    expected = reconstruction.sum() + n * penalty
    torch.testing.assert_close(_loss(model, x), expected, rtol=1e-12, atol=1e-9)
    # the prior's density at the code takes no part
    assert float(penalty) > 0


def test_a_wae_with_lambda_zero_is_a_plain_autoencoder(digits, device):
    wae = probae.WAE((D,), 4, weight=0.0, hidden=(32,)).to(device).double()
    ae = probae.AE((D,), 4, hidden=(32,)).to(device).double()
    ae.encoder.load_state_dict(wae.encoder.state_dict())
    ae.decoder.load_state_dict(wae.decoder.state_dict())
    x = _batch(digits, device)
    torch.testing.assert_close(_loss(wae, x), _loss(ae, x), rtol=1e-12, atol=1e-9)


def test_the_infovae_adds_the_weighted_mmd_of_its_draws_to_the_beta_elbo(digits, device):
    model = probae.InfoVAE(
        (D,), 3, likelihood=likelihoods.ContinuousBernoulli(), beta=0.5, weight=7.0, hidden=(32,)
    )
    model = model.to(device).double()
    x = _batch(digits, device)
    draws = torch.randn(x.shape[0], 3, dtype=torch.float64, generator=torch.Generator())
    _fixed_draws(model, draws)
    guide = poutine.trace(model.guide).get_trace(x)
    guide.compute_log_prob()
    z = guide.nodes["z"]["value"]
    per_point = 7.0 * mmd(z, draws.to(device), model.kernel_scale)
    torch.testing.assert_close(guide.nodes["mmd"]["log_prob"], per_point.expand(x.shape[0]))
    # in eval mode, where the estimators run, the pair is the VAE's: no MMD site
    model.eval()
    assert "mmd" not in poutine.trace(model.guide).get_trace(x).nodes
    # and with weight 0 and beta 1 it is the VAE, draw for draw
    plain = probae.InfoVAE((D,), 3, likelihood=likelihoods.ContinuousBernoulli(), weight=0.0)
    vae = probae.VAE((D,), 3, likelihood=likelihoods.ContinuousBernoulli())
    vae.load_state_dict(plain.state_dict())
    plain, vae = plain.to(device).double(), vae.to(device).double()
    torch.manual_seed(3)
    infovae_loss = _loss(plain, x)
    torch.manual_seed(3)
    torch.testing.assert_close(infovae_loss, _loss(vae, x), rtol=1e-12, atol=1e-9)


def test_the_rae_loss_is_reconstruction_code_and_decoder_penalties(digits, device):
    model = probae.RAE((D,), 4, code_weight=0.3, decoder_weight=0.01, hidden=(32,))
    model = model.to(device).double()
    x = _batch(digits, device)
    with torch.no_grad():
        z = model.encoder(x)
        recon = model.decoder(z)
        weights = sum(p.pow(2).sum() for p in model.decoder.parameters())
    per_point = (
        0.5 * (x - recon).pow(2).sum(-1)
        + D / 2 * math.log(2 * math.pi)
        + 0.15 * z.pow(2).sum(-1)
        + 0.01 * weights
    )
    torch.testing.assert_close(_loss(model, x), per_point.sum(), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(probae.evaluate.elbo(model, x), -per_point, rtol=1e-10, atol=1e-8)


def test_the_rae_gradient_penalty_is_the_decoder_jacobian_norm_by_autograd(digits, device):
    model = probae.RAE((D,), 3, regularization="gp", decoder_weight=0.5, hidden=(16,))
    model = model.to(device).double()
    z = torch.randn(5, 3, dtype=torch.float64).to(device)
    expected = torch.stack(
        [
            torch.autograd.functional.jacobian(model.decoder, z[i : i + 1]).pow(2).sum()
            for i in range(5)
        ]
    )
    torch.testing.assert_close(model.decoder_penalty(z), 0.5 * expected)


def test_the_spectral_rae_bounds_each_decoder_layer_by_one(digits, device):
    model = probae.RAE((D,), 4, regularization="spectral", hidden=(32,)).to(device)
    probae.fit(model, digits.to(device), epochs=2, batch_size=256, progress=False)
    layers = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert layers
    for layer in layers:
        assert float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) == pytest.approx(
            1.0, abs=0.05
        )


FAMILIES = {
    "rae-l2": lambda: probae.RAE((D,), 4),
    "rae-gp": lambda: probae.RAE((D,), 4, regularization="gp"),
    "wae": lambda: probae.WAE((D,), 4, hidden=(64,)),
    "info-vae": lambda: probae.InfoVAE(
        (D,), 4, likelihood=likelihoods.ContinuousBernoulli(), hidden=(64,)
    ),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_trains_through_fit_and_round_trips_through_save(
    name, digits, device, tmp_path
):
    model = FAMILIES[name]().to(device)
    history = probae.fit(model, digits.to(device), epochs=3, batch_size=128, progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert all(math.isfinite(p) for p in history.penalty)
    probae.save(model, tmp_path / "model.pt")
    loaded = probae.load(tmp_path / "model.pt").to(device)
    assert type(loaded) is type(model)
    x = digits.x[:10].to(device)
    torch.testing.assert_close(loaded.reconstruct(x), model.reconstruct(x))
    # every family samples through a density fitted to its codes
    mixture = samplers.GaussianMixture(components=3).fit(model, digits.to(device))
    assert loaded.sample(6, sampler=mixture).shape == (6, D)


def test_the_families_refuse_bad_options():
    with pytest.raises(ValueError, match="weight"):
        probae.WAE((D,), 4, weight=-1.0)
    with pytest.raises(ValueError, match="kernel_scale"):
        probae.InfoVAE((D,), 4, kernel_scale=0.0)
    with pytest.raises(ValueError, match="flat"):
        probae.WAE((D,), 4, prior=priors.Flat(4))
    with pytest.raises(ValueError, match="regularization"):
        probae.RAE((D,), 4, regularization="dropout")
    with pytest.raises(ValueError, match="code_weight"):
        probae.RAE((D,), 4, code_weight=float("nan"))
    with pytest.raises(ValueError, match="beta"):
        probae.InfoVAE((D,), 4, beta=0.0)
