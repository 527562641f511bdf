"""DRAW: the attention filterbank against its formula, exact reads, the reduction to a
VAE at T = 1, the per-step KLs, and the pair in the shared trainer and evaluator."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

import probae
from probae import evaluate, viz
from probae.models.draw import DRAW, _cell, filterbank


def test_filterbank_equals_its_formula(device):
    B, A, N = 5, 7, 3
    g_x, g_y = torch.tensor(3.2, device=device), torch.tensor(2.1, device=device)
    log_var, delta = torch.tensor(0.3, device=device), torch.tensor(1.7, device=device)
    f_x, f_y = filterbank(g_x, g_y, log_var, delta, (B, A), N)
    var = math.exp(0.3)
    for f, g, size in ((f_x, 3.2, A), (f_y, 2.1, B)):
        assert f.shape == (N, size)
        for i in range(1, N + 1):
            mu = g + (i - N / 2 - 0.5) * 1.7  # the centres of Gregor et al., eq. 19-20
            row = [math.exp(-((a - mu) ** 2) / (2 * var)) for a in range(1, size + 1)]
            z = sum(row)
            for a in range(size):
                assert f[i - 1, a].item() == pytest.approx(row[a] / z, rel=1e-5)


def test_attention_parameters_follow_the_papers_scaling(device):
    draw = DRAW(x_shape=(1, 6, 9), read=(4, 4), encoder_size=4, decoder_size=4).to(device)
    layer = nn.Linear(4, 5).to(device)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor([0.5, -0.2, 0.1, 0.4, 0.3]))
    f_x, f_y, gamma = draw.attention_parameters(layer, torch.zeros(1, 4, device=device), 4)
    g_x, g_y = (9 + 1) / 2 * 1.5, (6 + 1) / 2 * 0.8
    delta = (9 - 1) / (4 - 1) * math.exp(0.4)
    expected_x, expected_y = filterbank(
        *(torch.tensor([v], device=device) for v in (g_x, g_y, 0.1, delta)), (6, 9), 4
    )
    assert torch.allclose(f_x, expected_x) and torch.allclose(f_y, expected_y)
    assert gamma.item() == pytest.approx(math.exp(0.3))


def test_a_full_size_unit_stride_window_reads_the_image_exactly(device):
    H = W = 6
    g = torch.tensor([(W + 1) / 2], device=device)  # g~ = 0: the window's centre
    f_x, f_y = filterbank(
        g, g, torch.tensor([-12.0], device=device), torch.tensor([1.0], device=device), (H, W), W
    )
    image = torch.rand(1, 2, H, W, device=device)
    read = DRAW.glimpse(image, f_x, f_y, torch.ones(1, device=device))
    assert torch.allclose(read, image, atol=1e-6)


def _vae_with_the_draw_nets(draw):
    """A VAE whose encoder and decoder are DRAW's first step, written out by hand."""

    class Encoder(nn.Module):
        def forward(self, x):
            n = x.shape[0]
            zeros = x.new_zeros(n, draw.decoder_size)
            r = torch.cat([x, x - 0.5], -1)  # read without attention: [x, x - sigmoid(0)]
            h = draw.encoder_cell(torch.cat([r, zeros], -1))[0]
            loc, raw = draw.posterior_net(h).chunk(2, -1)
            return loc, nn.functional.softplus(raw) + 1e-4

    class Decoder(nn.Module):
        def forward(self, z):
            return draw.write_net(
                _cell(
                    draw.decoder_cell,
                    z,
                    (
                        z.new_zeros(*z.shape[:-1], draw.decoder_size),
                        z.new_zeros(*z.shape[:-1], draw.decoder_size),
                    ),
                )[0]
            )

    return probae.VAE(x_shape=draw.x_shape, z_dim=draw.z_dim, encoder=Encoder(), decoder=Decoder())


@pytest.mark.filterwarnings("ignore:For .* too heavy-tailed")
def test_one_step_without_attention_is_a_vae_with_the_same_nets(device):
    draw = DRAW(
        x_shape=(16,), z_dim=3, steps=1, attention=False, encoder_size=8, decoder_size=8
    ).to(device)
    vae = _vae_with_the_draw_nets(draw).to(device)
    x = torch.bernoulli(torch.full((5, 16), 0.3, device=device))
    for loss in (
        Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1),
        TraceMeanField_ELBO(max_plate_nesting=1),
    ):
        pyro.set_rng_seed(3)
        a = loss.differentiable_loss(draw.model, draw.guide, x)
        pyro.set_rng_seed(3)
        b = loss.differentiable_loss(vae.model, vae.guide, x)
        assert torch.allclose(a, b, rtol=1e-5)
    pyro.set_rng_seed(4)
    a = evaluate.log_likelihood(draw, x, num_samples=20).values
    pyro.set_rng_seed(4)
    b = evaluate.log_likelihood(vae, x, num_samples=20).values
    assert torch.allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("attention", [True, False])
def test_per_step_kls_sum_to_the_total_kl(device, attention):
    draw = DRAW(
        x_shape=(1, 6, 6),
        z_dim=2,
        steps=4,
        read=(2, 2),
        write=(3, 3),
        attention=attention,
        encoder_size=8,
        decoder_size=8,
    ).to(device)
    x = torch.bernoulli(torch.full((3, 1, 6, 6), 0.5, device=device))
    pyro.set_rng_seed(1)
    kls = draw.step_kls(x)
    assert kls.shape == (3, 4) and (kls > 0).all()
    # The same draw through Pyro: the mean-field loss is -log p(x|z) plus the total KL.
    pyro.set_rng_seed(1)
    loss = TraceMeanField_ELBO().differentiable_loss(draw.model, draw.guide, x)
    pyro.set_rng_seed(1)
    guide = poutine.trace(draw.guide).get_trace(x)
    model = poutine.trace(poutine.replay(draw.model, trace=guide)).get_trace(x)
    reconstruction = model.nodes["x"]["fn"].log_prob(x).sum()
    assert torch.allclose(loss, kls.sum() - reconstruction, rtol=1e-5)
    # and the Monte Carlo KL of all sites, log q - log p, averages to it
    pyro.set_rng_seed(2)
    with pyro.plate("mc", 1000, dim=-2):
        guide = poutine.trace(draw.guide).get_trace(x)
    model = poutine.trace(poutine.replay(draw.model, trace=guide)).get_trace(x)
    mc = sum(
        (
            guide.nodes[f"z_{t}"]["fn"].log_prob(guide.nodes[f"z_{t}"]["value"])
            - model.nodes[f"z_{t}"]["fn"].log_prob(guide.nodes[f"z_{t}"]["value"])
        )
        for t in range(1, 5)
    )
    pyro.set_rng_seed(2)
    with pyro.plate("mc", 1000, dim=-2):
        exact = draw.step_kls(x).sum(-1)
    assert exact.shape == (1000, 3)
    assert torch.allclose(mc.mean(0), exact.mean(0), atol=0.1)


@pytest.mark.filterwarnings("ignore:For .* too heavy-tailed")
def test_fit_evaluate_sample_and_draw_the_canvas(device, tmp_path):
    x = torch.bernoulli(torch.full((30, 64), 0.3, device=device))
    draw = DRAW(
        x_shape=(64,), z_dim=2, steps=3, read=(2, 2), write=(3, 3), encoder_size=8, decoder_size=8
    ).to(device)
    history = probae.fit(draw, x, epochs=2, batch_size=15, seed=0, progress=False)
    assert len(history) == 2
    ll = evaluate.log_likelihood(draw, x[:5], num_samples=20)
    elbo = evaluate.elbo(draw, x[:5], num_particles=20)
    assert (ll.values >= elbo - 0.5).all()  # the IWAE bound is above the ELBO
    assert draw.sample(4).shape == (4, 64)
    assert draw.canvases(draw.encode(x[:2])).shape == (3, 2, 64)
    path = viz.draw_canvas(draw, tmp_path / "canvas.png", n=3, seed=0)
    assert path.exists() and path.stat().st_size > 0
    again = probae.load(probae.save(draw, tmp_path / "draw")).to(device)
    assert torch.equal(again.encode(x[:3]), draw.encode(x[:3]))


def test_bad_windows_are_named():
    with pytest.raises(ValueError, match="read"):
        DRAW(x_shape=(16,), read=(2, 3))
    with pytest.raises(TypeError, match="write"):
        DRAW(x_shape=(16,), write=5)
    with pytest.raises(ValueError, match="steps"):
        DRAW(x_shape=(16,), steps=0)
