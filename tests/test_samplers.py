"""Densities fitted to codes: a mixture recovers a known mixture, a flow's density
integrates to one, both survive a state_dict round trip, and models decode their draws."""

import math

import pytest
import torch
from torch import distributions as D

import probae
from probae import data, samplers


def _true_mixture():
    return D.MixtureSameFamily(
        D.Categorical(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)),
        D.MultivariateNormal(
            torch.tensor([[-3.0, 0.0], [2.0, 2.0], [2.0, -3.0]], dtype=torch.float64),
            scale_tril=torch.tensor(
                [[[1.0, 0.0], [0.5, 0.6]], [[0.4, 0.0], [0.0, 0.8]], [[0.7, 0.0], [-0.3, 0.5]]],
                dtype=torch.float64,
            ),
        ),
    )


def test_a_mixture_fitted_to_mixture_codes_recovers_the_log_density_on_held_out_codes():
    truth = _true_mixture()
    torch.manual_seed(0)
    codes, held_out = truth.sample((4000,)), truth.sample((2000,))
    fitted = samplers.GaussianMixture(components=3).fit_codes(codes)
    difference = fitted.log_prob(held_out) - truth.log_prob(held_out)
    # the paired difference is O(parameters / N) and its Monte Carlo error small
    se = difference.std() / math.sqrt(len(difference))
    assert abs(difference.mean()) < max(4 * se, 0.01)


def test_mixture_codes_have_the_moments_of_the_fitted_mixture():
    torch.manual_seed(1)
    fitted = samplers.GaussianMixture(components=3).fit_codes(_true_mixture().sample((3000,)))
    weights = fitted.logits.exp()
    covariances = fitted.scale_tril @ fitted.scale_tril.mT
    mean = (weights[:, None] * fitted.locs).sum(0)
    second = (
        weights[:, None, None] * (covariances + fitted.locs[:, :, None] * fitted.locs[:, None])
    ).sum(0)
    z = fitted.sample(200_000)
    assert z.shape == (200_000, 2)
    torch.testing.assert_close(z.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), second - mean[:, None] * mean, atol=0.06, rtol=0.02)


@pytest.mark.parametrize("transform", ["spline", "affine"])
def test_a_flow_density_integrates_to_one_on_a_grid(transform):
    torch.manual_seed(2)
    codes = _true_mixture().sample((2000,)).float()
    flow = samplers.Flow(transform=transform, layers=2, hidden=(16,), steps=30).fit_codes(codes)
    edges = torch.linspace(-12, 12, 181)
    step = float(edges[1] - edges[0])
    grid = torch.cartesian_prod(edges, edges)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * step**2
    assert float(mass) == pytest.approx(1.0, abs=0.02)
    # training raised the likelihood of the codes above a standardized Gaussian's
    shift, scale = codes.mean(0), codes.std(0)
    gaussian = D.Normal(shift, scale).log_prob(codes).sum(-1).mean()
    with torch.no_grad():
        assert flow.log_prob(codes).mean() > gaussian


@pytest.mark.parametrize(
    "make",
    [
        lambda: samplers.GaussianMixture(components=3, covariance="diag"),
        lambda: samplers.Flow(transform="affine", layers=2, hidden=(8,), steps=5),
    ],
    ids=["mixture", "flow"],
)
def test_a_fitted_sampler_round_trips_through_its_state_dict(make, tmp_path):
    codes = _true_mixture().sample((500,)).float()
    fitted = make().fit_codes(codes)
    torch.save(fitted.state_dict(), tmp_path / "sampler.pt")
    loaded = make()
    loaded.load_state_dict(torch.load(tmp_path / "sampler.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(codes), fitted.log_prob(codes))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train")


@pytest.mark.parametrize(
    "family", [lambda: probae.VAE((64,), 3), lambda: probae.AE((64,), 3)], ids=["vae", "ae"]
)
def test_models_decode_draws_of_a_sampler_fitted_to_their_codes(family, digits, device):
    model = family().to(device)
    mixture = samplers.GaussianMixture(components=4).fit(model, digits)
    assert mixture.locs.device.type == device.type
    images = model.sample(16, sampler=mixture)
    assert images.shape == (16, 64) and images.device.type == device.type
    # the sampler's codes are what gets decoded
    torch.manual_seed(5)
    expected = model.decode(mixture.sample(16))
    torch.manual_seed(5)
    torch.testing.assert_close(model.sample(16, sampler=mixture), expected)
    flow = samplers.Flow(transform="spline", layers=2, hidden=(8,), steps=3).fit(model, digits)
    assert model.sample(5, sampler=flow).shape == (5, 64)
    with pytest.raises(TypeError, match="sampler"):
        model.sample(4, sampler="gmm")
    with pytest.raises(ValueError, match="z_dim"):
        model.sample(4, sampler=samplers.GaussianMixture(2).fit_codes(torch.randn(50, 5)))


def test_samplers_refuse_bad_input():
    with pytest.raises(ValueError, match="components"):
        samplers.GaussianMixture(components=0)
    with pytest.raises(ValueError, match="components=10"):
        samplers.GaussianMixture(components=10).fit_codes(torch.randn(5, 2))
    with pytest.raises(ValueError, match="transform"):
        samplers.Flow(transform="maf")
    with pytest.raises(RuntimeError, match="not fitted"):
        samplers.GaussianMixture().sample(3)
    with pytest.raises(ValueError, match="NaN"):
        samplers.Flow().fit_codes(torch.full((10, 2), float("nan")))
    with pytest.raises(TypeError, match="encode"):
        samplers.GaussianMixture().fit(object(), torch.randn(10, 2))


def test_posterior_codes_are_draws_of_q_around_the_means(digits, device):
    vae = probae.VAE((64,), 3).to(device)
    means = samplers.encode_all(vae, digits)
    draws = samplers.encode_all(vae, digits, codes="posterior")
    with torch.no_grad():
        scale = vae.encoder(digits.x.to(device))[1]
    standardized = (draws - means) / scale
    # N * z_dim = 4311 standard normal values: mean 0 and variance 1 within a few errors
    assert abs(float(standardized.mean())) < 4 / math.sqrt(standardized.numel())
    assert float(standardized.var()) == pytest.approx(1.0, abs=0.1)
    ae = probae.AE((64,), 3).to(device)
    torch.testing.assert_close(
        samplers.encode_all(ae, digits, codes="posterior"), samplers.encode_all(ae, digits)
    )
    with pytest.raises(ValueError, match="codes"):
        samplers.encode_all(ae, digits, codes="sample")


def test_a_sampler_fitted_to_posterior_draws_is_the_same_every_time(digits, device):
    vae = probae.VAE((64,), 3).to(device)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    first = samplers.GaussianMixture(2, seed=5).fit(vae, digits, codes="posterior")
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is untouched
    torch.manual_seed(12)  # another global state: the same fit
    again = samplers.GaussianMixture(2, seed=5).fit(vae, digits, codes="posterior")
    other = samplers.GaussianMixture(2, seed=6).fit(vae, digits, codes="posterior")
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), other.state_dict().values(), strict=True)
    )


def test_the_two_stage_sampler_decodes_a_second_vae_fitted_to_the_codes(tmp_path):
    generator = torch.Generator().manual_seed(4)
    mixing = torch.tensor([[1.0, 0.5], [0.0, 0.3]])
    codes = torch.randn(1000, 2, generator=generator) @ mixing + torch.tensor([1.0, -2.0])
    stage = samplers.TwoStage(hidden=(32, 32), epochs=15, lr=5e-3).fit_codes(codes)
    # the learned observation scale fell from its start at 1 (standardized units)
    assert float(stage.vae.likelihood.scale.detach()) < 0.9
    torch.manual_seed(6)
    z = stage.sample(5000)
    torch.manual_seed(6)
    u = torch.randn(5000, 2)
    torch.testing.assert_close(z, stage.vae.decode(u) * stage.scale + stage.shift)
    torch.testing.assert_close(z.mean(0), codes.mean(0), atol=0.15, rtol=0)
    assert float(torch.corrcoef(z.T)[0, 1]) > 0.5  # the codes' correlation is 0.86
    # its log_prob is the second VAE's ELBO, a lower bound, finite on the codes
    assert torch.isfinite(stage.log_prob(codes[:10])).all()
    torch.save(stage.state_dict(), tmp_path / "stage.pt")
    loaded = samplers.TwoStage(hidden=(32, 32))
    loaded.load_state_dict(torch.load(tmp_path / "stage.pt", weights_only=True))
    torch.manual_seed(7)
    expected = stage.sample(4)
    torch.manual_seed(7)
    torch.testing.assert_close(loaded.sample(4), expected)


def test_the_command_line_samples_through_a_fitted_density(tmp_path, capsys, device):
    from probae import cli

    run, dev = tmp_path / "run", ["--device", str(device)]
    tiny = ["--z-dim", "2", "--hidden", "32", "--no-progress"]
    assert (
        cli.main(["train", "--model", "wae", "--run-dir", str(run), "--epochs", "1", *tiny, *dev])
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "grid.png"
    argv = ["sample", str(run), "-n", "9", "--out", str(out), *dev]
    assert cli.main([*argv, "--sampler", "gmm:3"]) == 0
    assert "fitted gmm:3" in capsys.readouterr().out and out.stat().st_size > 0
    assert cli.main([*argv, "--sampler", "gmm:0"]) == 2
    assert "--sampler gmm:K" in capsys.readouterr().err
    assert cli.main([*argv, "--sampler", "kde"]) == 2
