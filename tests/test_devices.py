"""Tensors follow the model's device: the flat prior's density is made where its
argument lives, and the methods for using a trained model take data from anywhere."""

import torch

from probae import CVAE, VAE, ContractiveAE, KSparseAE, evaluate, priors


def test_the_flat_prior_density_lives_on_its_arguments_device_and_dtype(device):
    z = torch.randn(5, 3, device=device, dtype=torch.float64)
    log_p = priors.Flat(3).to(device)((5,)).log_prob(z)
    assert log_p.device == z.device and log_p.dtype == z.dtype
    assert log_p.shape == (5,) and torch.equal(log_p, torch.zeros_like(log_p))


def test_encode_decode_and_contraction_take_cpu_data_for_a_model_on_the_device(device):
    x = torch.rand(4, 6).round()  # on the CPU whatever the model's device
    for model in (VAE((6,), 2, hidden=(5,)), KSparseAE((6,), 4, k=2, hidden=(5,))):
        model = model.to(device)
        z = model.encode(x)
        assert z.device == model.device and z.shape == (4, model.z_dim)
        assert model.decode(z.cpu()).device == model.device
        torch.testing.assert_close(model.decode(model.encode(x)), model.reconstruct(x))
    contractive = ContractiveAE((6,), 2, hidden=(5,)).to(device)
    penalty = contractive.contraction(x)
    assert penalty.device == contractive.device and penalty.shape == (4,)
    cvae = CVAE((6,), (3,), 2, hidden=(5,), prior_hidden=(4,)).to(device)
    c = torch.eye(3)[[0, 1, 2, 0]]
    assert cvae.decode(cvae.encode(x, c).cpu(), c).device == cvae.device


def test_an_autoencoder_with_a_flat_prior_is_scored_on_the_device(device):
    x = torch.rand(4, 6, device=device)
    ae = ContractiveAE((6,), 2, hidden=(5,)).to(device)
    values = evaluate.elbo(ae, x)
    assert values.device == x.device and torch.isfinite(values).all()
