"""The VAE's surface: shapes, devices, generation, networks for images, and errors."""

import pytest
import torch

from probae import VAE, likelihoods, nets, priors


@pytest.mark.parametrize("x_shape", [(64,), (1, 28, 28), (3, 32, 32)])
def test_vae_surface_on_flat_and_image_shapes(device, x_shape):
    vae = VAE(x_shape, 5, hidden=(32,)).to(device)
    x = torch.rand(3, *x_shape, device=device)
    assert vae.encode(x).shape == (3, 5)
    assert vae.decode(torch.randn(3, 5, device=device)).shape == (3, *x_shape)
    recon = vae.reconstruct(x)
    assert recon.shape == x.shape and recon.device.type == device.type
    assert 0 <= recon.min() and recon.max() <= 1  # Bernoulli means are probabilities
    assert vae.sample(4).shape == (4, *x_shape)


def test_networks_pass_extra_leading_dimensions(device):
    for encoder, decoder in [
        (nets.MLPEncoder((64,), 3, (16,)), nets.MLPDecoder(3, (64,), (16,))),
        (nets.ConvEncoder((1, 28, 28), 3), nets.ConvDecoder(3, (1, 28, 28))),
    ]:
        encoder, decoder = encoder.to(device), decoder.to(device)
        x = torch.rand(7, 2, *encoder.x_shape, device=device)
        loc, scale = encoder(x)
        assert loc.shape == scale.shape == (7, 2, 3) and (scale > 0).all()
        assert decoder(loc).shape == (7, 2, *encoder.x_shape)
        # the same as running each slice on its own
        torch.testing.assert_close(encoder(x[3])[0], loc[3])


def test_gaussian_vae_reconstructs_real_values(device):
    vae = VAE((10,), 2, likelihood=likelihoods.Gaussian(0.1), hidden=(8,)).to(device)
    assert vae.reconstruct(torch.randn(4, 10, device=device)).shape == (4, 10)


def test_bad_construction_and_input_are_named(device):
    with pytest.raises(ValueError, match="z_dim must be a positive integer"):
        VAE((64,), 0)
    with pytest.raises(ValueError, match="beta must be a positive"):
        VAE((64,), 2, beta=-1)
    with pytest.raises(ValueError, match="prior has z_dim=3"):
        VAE((64,), 2, prior=priors.StandardNormal(3))
    with pytest.raises(TypeError, match="likelihood must be"):
        VAE((64,), 2, likelihood=torch.distributions.Normal)
    with pytest.raises(ValueError, match="H and W divisible by 4"):
        VAE((1, 30, 30), 2)
    vae = VAE((64,), 2, hidden=(8,)).to(device)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 64\)"):
        vae.reconstruct(torch.rand(3, 8, 8, device=device))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        vae.sample(0)


def test_a_flat_prior_cannot_be_sampled():
    vae = VAE((64,), 2, prior=priors.Flat(2), hidden=(8,))
    with pytest.raises(RuntimeError, match="flat \\(improper\\) prior"):
        vae.sample(3)


def test_state_dict_round_trip(tmp_path, device):
    vae = VAE((64,), 3, prior=priors.GaussianMixture(3, 4), hidden=(8,)).to(device)
    torch.save(vae.state_dict(), tmp_path / "vae.pt")
    other = VAE((64,), 3, prior=priors.GaussianMixture(3, 4, seed=9), hidden=(8,)).to(device)
    other.load_state_dict(torch.load(tmp_path / "vae.pt", weights_only=True, map_location=device))
    x = torch.rand(2, 64, device=device)
    torch.testing.assert_close(other.reconstruct(x), vae.reconstruct(x))
    torch.testing.assert_close(other.prior.locs, vae.prior.locs)
