"""beta-TCVAE, FactorVAE and DIP-VAE: their extra terms against independent
computations, their training, saving and the family table."""

import json
import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from scipy.stats import norm

import probae
from probae import DIPVAE, VAE, BetaTCVAE, FactorVAE, evaluate
from probae.models import families
from probae.models.factorvae import permute_dims
from probae.models.tcvae import minibatch_weighted_sampling


def _binary(n, d, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.3), generator=generator).to(device)


def test_minibatch_weighted_sampling_by_brute_force():
    generator = torch.Generator().manual_seed(0)
    m, d, n = 5, 3, 40
    loc = torch.randn(m, d, generator=generator, dtype=torch.float64)
    scale = torch.rand(m, d, generator=generator, dtype=torch.float64) + 0.3
    z = loc + scale * torch.randn(m, d, generator=generator, dtype=torch.float64)
    log_q, log_prod = minibatch_weighted_sampling(z, loc, scale, n)
    L, S, Z = loc.numpy(), scale.numpy(), z.numpy()
    for i in range(m):
        joint = sum(np.prod(norm.pdf(Z[i], L[j], S[j])) for j in range(m))
        assert log_q[i].item() == pytest.approx(math.log(joint / (n * m)), rel=1e-10)
        marginals = [
            sum(norm.pdf(Z[i, k], L[j, k], S[j, k]) for j in range(m)) / (n * m) for k in range(d)
        ]
        assert log_prod[i].item() == pytest.approx(np.log(marginals).sum(), rel=1e-10)


def test_tcvae_terms_sum_to_the_log_ratio(device):
    model = BetaTCVAE((12,), 3, dataset_size=100, hidden=(16,)).to(device)
    x = _binary(20, 12, device)
    loc, scale = model.encoder(x)
    z = loc + scale * torch.randn_like(loc)
    mi, tc, dim_kl = model.kl_terms(x, z, loc, scale)
    log_ratio = torch.distributions.Normal(loc, scale).log_prob(z).sum(
        -1
    ) - torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(mi + tc + dim_kl, log_ratio)


def _loss(model, x, seed):
    pyro.set_rng_seed(seed)
    return Trace_ELBO().differentiable_loss(model.model, model.guide, x)


def test_tcvae_with_equal_weights_is_the_beta_vae(device):
    """alpha = beta = gamma puts the same weight on the three parts: the beta-VAE."""
    tcvae = BetaTCVAE((12,), 3, beta=4.0, alpha=4.0, gamma=4.0, dataset_size=50, hidden=(16,))
    vae = VAE((12,), 3, beta=4.0, hidden=(16,))
    vae.load_state_dict(tcvae.state_dict())
    tcvae, vae = tcvae.to(device), vae.to(device)
    x = _binary(25, 12, device)
    torch.testing.assert_close(_loss(tcvae, x, 0), _loss(vae, x, 0))


def test_tcvae_loss_weights_each_part(device):
    """The loss less the beta-VAE's (same draws) is (alpha - beta) MI + (gamma - beta) dimKL."""
    kwargs = dict(beta=5.0, alpha=2.0, gamma=0.5, dataset_size=50, hidden=(16,))
    tcvae = BetaTCVAE((12,), 3, **kwargs).to(device)
    vae = VAE((12,), 3, beta=5.0, hidden=(16,)).to(device)
    vae.load_state_dict(tcvae.state_dict())
    x = _binary(25, 12, device)
    difference = _loss(tcvae, x, 3) - _loss(vae, x, 3)
    pyro.set_rng_seed(3)
    loc, scale = tcvae.encoder(x)
    z = pyro.sample("z", pyro.distributions.Normal(loc, scale).to_event(1))
    mi, _, dim_kl = tcvae.kl_terms(x, z, loc, scale)
    torch.testing.assert_close(difference, ((2.0 - 5.0) * mi + (0.5 - 5.0) * dim_kl).sum())
    # evaluation sees the plain ELBO
    pyro.set_rng_seed(5)
    ours = evaluate.elbo(tcvae, x)
    pyro.set_rng_seed(5)
    torch.testing.assert_close(ours, evaluate.elbo(vae, x))


def test_tcvae_refuses_a_batch_larger_than_the_data_set(device):
    model = BetaTCVAE((12,), 3, alpha=0.0, dataset_size=10, hidden=(16,)).to(device)
    with pytest.raises(ValueError, match="dataset_size"):
        _loss(model, _binary(20, 12, device), 0)
    with pytest.raises(ValueError, match="dataset_size"):
        BetaTCVAE((12,), 3, dataset_size=0)


def test_permute_dims_permutes_each_coordinate_separately(device):
    z = torch.arange(60.0, device=device).reshape(20, 3)
    pyro.set_rng_seed(0)
    permuted = permute_dims(z)
    assert torch.equal(permuted.sort(0).values, z)  # each column keeps its values
    assert not torch.equal(permuted, z)
    # rows are recombined: the columns no longer move together
    assert not torch.equal(permuted[:, 0].argsort(), permuted[:, 1].argsort())


def test_factor_vae_penalty_trains_encoder_and_discriminator_apart(device):
    model = FactorVAE((12,), 3, gamma=7.0, discriminator_hidden=(8,), hidden=(16,)).to(device)
    x = _binary(16, 12, device)
    loss = _loss(model, x, 0)
    disc = list(model.discriminator.parameters())
    grads = torch.autograd.grad(loss, disc)
    # the discriminator's gradient is its own cross-entropy's, on the same draws
    pyro.set_rng_seed(0)
    z = pyro.sample("z", model.posterior(x))
    own = torch.autograd.grad(model.discriminator_loss(z).sum(), disc)
    for a, b in zip(grads, own, strict=True):
        torch.testing.assert_close(a, b)
    # the encoder's gradient is the VAE's plus gamma times the logit's, not the
    # discriminator loss's
    vae = VAE((12,), 3, hidden=(16,)).to(device)
    vae.load_state_dict(model.state_dict(), strict=False)
    enc = list(model.encoder.parameters())
    got = torch.autograd.grad(_loss(model, x, 0), enc)
    base = torch.autograd.grad(_loss(vae, x, 0), list(vae.encoder.parameters()))
    pyro.set_rng_seed(0)
    z = pyro.sample("z", model.posterior(x))
    extra = torch.autograd.grad(7.0 * model.total_correlation_logits(z).sum(), enc)
    for g, b, e in zip(got, base, extra, strict=True):
        torch.testing.assert_close(g, b + e)


@pytest.mark.slow
def test_density_ratio_estimates_a_known_total_correlation():
    """A discriminator trained on q(z) against its dimension-permuted copy recovers
    TC = -1/2 log det(rho) of a correlated Gaussian."""
    torch.manual_seed(0)
    model = FactorVAE((2,), 2, discriminator_hidden=(64, 64))
    rho = 0.8
    chol = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]]))
    optim = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3)
    for _ in range(3000):
        z = torch.randn(256, 2) @ chol.T
        optim.zero_grad()
        model.discriminator_loss(z).mean().backward()
        optim.step()
    z = torch.randn(20000, 2) @ chol.T
    estimate = model.total_correlation_logits(z).mean().item()
    assert estimate == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.08)


@pytest.mark.parametrize("kind", ["i", "ii"])
def test_dip_vae_covariance_and_penalty(kind, device):
    model = DIPVAE((12,), 3, kind=kind, lambda_od=2.0, hidden=(16,)).to(device)
    assert model.lambda_d == (20.0 if kind == "i" else 2.0)
    x = _binary(64, 12, device)
    loc, scale = model.encoder(x)
    cov = model.covariance(loc, scale)
    if kind == "ii":
        # Cov of z ~ q(z) = (1/N) sum_n N(mu_n, sigma_n^2): estimate it from many draws
        draws = (loc + scale * torch.randn(4000, *loc.shape, device=device)).reshape(-1, 3)
        expected = torch.cov(draws.T, correction=0)
        torch.testing.assert_close(cov, expected, atol=0.02, rtol=0.05)
    else:
        torch.testing.assert_close(cov, torch.cov(loc.T, correction=0))
    c = cov.detach().cpu().numpy()
    off = (c**2).sum() - (np.diag(c) ** 2).sum()
    expected = 2.0 * off + model.lambda_d * ((np.diag(c) - 1) ** 2).sum()
    assert model.penalty(loc, scale).item() == pytest.approx(expected, rel=1e-5)
    # the mean loss over a batch is the VAE's plus the penalty
    vae = VAE((12,), 3, hidden=(16,)).to(device)
    vae.load_state_dict(model.state_dict())
    difference = (_loss(model, x, 1) - _loss(vae, x, 1)) / x.shape[0]
    assert difference.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "config",
    [
        {"model": "beta-tcvae", "dataset_size": 60, "beta": 3.0, "alpha": 0.5},
        {"model": "factor-vae", "gamma": 20.0, "discriminator_hidden": [8]},
        {"model": "dip-vae", "kind": "i", "lambda_od": 5.0},
    ],
)
def test_families_train_save_and_load(config, tmp_path, device):
    model = families.build({**config, "hidden": [16], "z_dim": 3}, (12,)).to(device)
    x = _binary(60, 12, device)
    history = probae.fit(model, x, epochs=2, batch_size=20, seed=0)
    assert all(math.isfinite(v) for v in history.train_loss)
    probae.save(model, tmp_path / "run")
    again = probae.load(tmp_path / "run", device=device)
    assert type(again) is type(model)
    torch.testing.assert_close(again.encode(x), model.encode(x))
    for key in config:
        if key != "model":
            value = getattr(again, key)
            assert list(value) == config[key] if isinstance(value, tuple) else value == config[key]


def test_beta_tcvae_refuses_to_train_without_the_data_set_size(device):
    model = families.build({"model": "beta-tcvae", "hidden": [8]}, (12,)).to(device)
    assert model.dataset_size is None
    with pytest.raises(ValueError, match="dataset_size"):
        probae.fit(model, _binary(20, 12, device), epochs=1)


def test_command_line_trains_and_measures_on_dsprites(tmp_path, capsys, monkeypatch, device):
    from probae import cli, dsprites

    # a small sample of dSprites stands in for the 50,000-image default
    monkeypatch.setattr(
        cli._data,
        "load",
        lambda name, split, root=None, flatten=True: dsprites.load(
            split, size=300 if split == "train" else 200, flatten=flatten
        ),
    )
    run = tmp_path / "run"
    options = ["--z-dim", "3", "--hidden", "32", "--threads", "1", "--no-progress"]
    options += ["--device", str(device)]
    argv = ["train", "--model", "beta-tcvae", "--data", "dsprites", "--run-dir", str(run)]
    assert cli.main([*argv, "--epochs", "1", "--alpha", "0.5", *options]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["dataset_size"] == 300 and config["alpha"] == 0.5
    capsys.readouterr()
    evaluate = ["evaluate", str(run), "--num-samples", "5", "--disentanglement"]
    assert cli.main([*evaluate, "--device", str(device)]) == 0
    out = capsys.readouterr().out
    scores = json.loads((run / "metrics.json").read_text())["disentanglement"]
    assert set(scores) >= {"mig", "factor_vae", "beta_vae", "dci_disentanglement", "sap"}
    assert f"{scores['mig']:.4f}" in out


def test_command_line_refuses_disentanglement_without_factors(tmp_path, capsys):
    from probae import cli

    run = tmp_path / "run"
    options = ["--z-dim", "2", "--hidden", "16", "--threads", "1", "--no-progress"]
    assert cli.main(["train", "--run-dir", str(run), "--epochs", "1", *options]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--num-samples", "5", "--disentanglement"]) == 2
    assert "known factors" in capsys.readouterr().err
    assert cli.main(["train", "--model", "vae", "--gamma", "3", "--run-dir", str(run / "x")]) == 2
    assert "factor-vae" in capsys.readouterr().err


def test_factor_vs_latent_draws_the_mutual_information(tmp_path):
    import matplotlib.image

    from probae import dsprites, viz

    ds = dsprites.synthetic(500, sizes=(3, 4))
    path = viz.factor_vs_latent(lambda x: x.flip(1), ds, tmp_path / "mi.png")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    with pytest.raises(ValueError, match="factor_names"):
        viz.factor_vs_latent(lambda x: x, ds, tmp_path / "x.png", factor_names=["a"])
