"""VQ-VAE: the quantizer, its gradients and loss terms, the EMA codebook, the code prior,
and the pair in the shared trainer and evaluator, each against its formula."""

import itertools
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

import probae
from probae import evaluate
from probae.models.code_prior import GatedPixelCNN
from probae.models.vqvae import VQVAE, fit_code_prior


def small(device, **kw):
    options = dict(codebook_size=5, code_dim=3, channels=(8,), prior_channels=8, prior_layers=2)
    return VQVAE(x_shape=(16,), **{**options, **kw}).to(device)


def binary(n, device, dim=16):
    return torch.bernoulli(torch.full((n, dim), 0.4, device=device))


def test_quantizer_returns_the_nearest_entry_by_brute_force(device):
    vq = small(device, codebook_size=7, code_dim=4)
    z_e = torch.randn(6, 4, 2, 2, device=device)
    codes = vq.nearest(z_e)
    for n, i, j in itertools.product(range(6), range(2), range(2)):
        distances = [(z_e[n, :, i, j] - e).pow(2).sum().item() for e in vq.codebook]
        assert codes[n, i, j].item() == min(range(7), key=distances.__getitem__)
    assert torch.equal(vq.lookup(codes)[3, :, 1, 0], vq.codebook[codes[3, 1, 0]])


def test_gradient_passes_straight_through_to_the_encoder(device):
    vq = small(device)
    z_e = torch.randn(4, 3, 2, 2, device=device, requires_grad=True)
    _, z_q, z_st = vq.quantize(z_e)
    assert torch.allclose(z_st, z_q)
    weights = torch.randn_like(z_e)
    (z_st * weights).sum().backward()
    assert torch.equal(z_e.grad, weights)  # d z_st / d z_e is the identity


@pytest.mark.parametrize("ema", [False, True])
def test_codebook_and_commitment_terms_equal_their_formulas(device, ema):
    vq = small(device, ema=ema, commitment=0.3)
    z_e = torch.randn(4, 3, 2, 2, device=device, requires_grad=True)
    _, z_q, _ = vq.quantize(z_e)
    loss = vq.vq_loss(z_e, z_q)
    sq = (z_e - z_q).pow(2).sum((1, 2, 3))
    expected = 0.3 * sq + (0 if ema else sq)
    assert torch.allclose(loss, expected)
    # the commitment term moves only the encoder, the codebook term only the codebook
    grad = torch.autograd.grad(loss.sum(), z_e, retain_graph=not ema)[0]
    assert torch.allclose(grad, 0.3 * 2 * (z_e - z_q).detach())
    if not ema:
        book = torch.autograd.grad(loss.sum(), vq.codebook)[0]
        expected_book = torch.zeros_like(vq.codebook)
        codes = vq.nearest(z_e).reshape(-1)
        diffs = 2 * (z_q - z_e).detach().movedim(1, -1).reshape(-1, 3)
        expected_book.index_add_(0, codes, diffs)
        assert torch.allclose(book, expected_book, atol=1e-6)


def test_the_training_loss_is_reconstruction_plus_constant_kl_plus_vq_terms(device):
    vq = small(device, ema=False)
    x = binary(6, device)
    loss = Trace_ELBO().differentiable_loss(vq.model, vq.guide, x)
    z_e = vq.encode_continuous(x)
    _, z_q, _ = vq.quantize(z_e)
    recon = torch.distributions.Bernoulli(logits=vq.decoder(z_q)).log_prob(x).sum()
    kl = 6 * 2 * 2 * math.log(5)  # a uniform prior over K codes at each of h*w positions
    expected = -recon + kl + vq.vq_loss(z_e, z_q).sum()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_ema_updates_are_the_papers_running_averages(device):
    vq = small(device, codebook_size=3, code_dim=2, decay=0.9, epsilon=1e-5)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
        vq.embed_sum.copy_(vq.codebook)
        vq.cluster_size.fill_(1.0)
    old_sum, old_size = vq.embed_sum.clone(), vq.cluster_size.clone()
    # five vectors: three near entry 0, two near entry 1, none near entry 2
    vectors = torch.tensor([[0.5, 0.0], [0.0, 1.0], [1.0, 1.0], [9.0, 0.0], [11.0, 2.0]])
    z_e = vectors.t().reshape(1, 2, 1, 5).to(device)
    codes = vq.nearest(z_e)
    assert codes.reshape(-1).tolist() == [0, 0, 0, 1, 1]
    vq.ema_update(z_e, codes)
    n = torch.tensor([3.0, 2.0, 0.0])
    s = torch.stack([vectors[:3].sum(0), vectors[3:].sum(0), torch.zeros(2)])
    size = 0.9 * old_size.cpu() + 0.1 * n
    m = 0.9 * old_sum.cpu() + 0.1 * s
    total = size.sum()
    smoothed = (size + 1e-5) / (total + 3e-5) * total
    assert torch.allclose(vq.cluster_size.cpu(), size)
    assert torch.allclose(vq.embed_sum.cpu(), m)
    assert torch.allclose(vq.codebook.cpu(), m / smoothed[:, None])


def test_dead_codes_restart_at_encoder_outputs(device):
    vq = small(device, codebook_size=4, code_dim=2, dead_code_threshold=0.5)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]]))
        vq.embed_sum.copy_(vq.codebook)
        vq.cluster_size.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))
    z_e = torch.tensor([[0.1, 0.2], [0.3, -0.1]]).t().reshape(1, 2, 1, 2).to(device)
    vq.ema_update(z_e, vq.nearest(z_e))
    outputs = z_e.movedim(1, -1).reshape(-1, 2)
    for row in vq.codebook[1:]:  # every dead entry is now one of the batch's vectors
        assert min((row - o).abs().max().item() for o in outputs) < 1e-6
    assert torch.equal(vq.cluster_size[1:].cpu(), torch.ones(3))


def test_code_prior_probabilities_sum_to_one_over_all_grids(device):
    torch.manual_seed(0)
    prior = GatedPixelCNN(codebook_size=3, channels=8, layers=3).to(device)
    grids = torch.tensor(list(itertools.product(range(3), repeat=4)), device=device)
    log_p = prior.log_prob(grids.reshape(-1, 2, 2))
    assert torch.allclose(log_p.logsumexp(0), torch.zeros((), device=device), atol=1e-5)
    assert log_p.std() > 0.01  # an untrained prior is not uniform: the sum is no accident


def test_code_prior_is_autoregressive_in_raster_order(device):
    prior = GatedPixelCNN(codebook_size=4, channels=8, layers=3).to(device)
    codes = torch.randint(4, (1, 3, 4), device=device)
    base = prior.logits(codes)
    for i, j in itertools.product(range(3), range(4)):
        changed = codes.clone()
        changed[0, i, j] = (changed[0, i, j] + 1) % 4
        moved = (prior.logits(changed) - base).abs().amax(1)[0] > 1e-6
        later = torch.zeros(3, 4, dtype=torch.bool, device=device)
        later.view(-1)[i * 4 + j + 1 :] = True
        assert not (moved & ~later).any(), f"position {(i, j)} reaches an earlier one"


def test_fit_evaluate_and_sample_through_the_code_prior(device):
    x = binary(40, device, dim=64)
    vq = VQVAE(
        x_shape=(64,), codebook_size=4, code_dim=2, channels=(8,), prior_layers=2, prior_channels=8
    ).to(device)
    history = probae.fit(vq, x, epochs=2, batch_size=20, seed=0, progress=False)
    assert len(history.metrics["perplexity"]) == 2
    assert 1.0 <= history.metrics["perplexity"][-1] <= 4.0
    usage = vq.codebook_usage(x)
    assert usage.counts.sum().item() == 40 * 16
    p = usage.counts / usage.counts.sum()
    assert usage.perplexity == pytest.approx(math.exp(-(p[p > 0] * p[p > 0].log()).sum().item()))
    with pytest.raises(RuntimeError, match="fit_code_prior"):
        vq.sample(2)
    uniform = evaluate.elbo(vq, x)
    prior = fit_code_prior(vq, x, epochs=2, seed=0)
    assert vq.prior is prior and vq.sample(3).shape == (3, 64)
    learned = evaluate.elbo(vq, x)
    # the ELBO's code term is log p(k) under the prior: the difference of the two ELBOs
    codes = vq.code_indices(x)
    log_pk = prior.log_prob(codes)
    assert torch.allclose(learned - uniform, log_pk + 16 * math.log(4), atol=1e-4)
    bpd = evaluate.bits_per_dim(vq, x)
    assert bpd == pytest.approx(-learned.mean().item() / (64 * math.log(2)), rel=1e-5)
    with pytest.raises(ValueError, match="Delta"):
        evaluate.log_likelihood(vq, x, num_samples=2)


def test_save_and_load_keep_the_code_prior(device, tmp_path):
    x = binary(10, device, dim=64)
    vq = VQVAE(
        x_shape=(64,), codebook_size=4, code_dim=2, channels=(8,), prior_layers=2, prior_channels=8
    ).to(device)
    fit_code_prior(vq, x, epochs=1, seed=0)
    probae.save(vq, tmp_path / "vq")
    again = probae.load(tmp_path / "vq").to(device)
    assert torch.equal(again.codebook, vq.codebook)
    assert torch.allclose(evaluate.elbo(again, x), evaluate.elbo(vq, x))


def test_bad_options_are_named(device):
    with pytest.raises(ValueError, match="channels"):
        VQVAE(x_shape=(1, 6, 6), channels=(8, 8))
    with pytest.raises(ValueError, match="x_shape"):
        VQVAE(x_shape=(10,))
    with pytest.raises(ValueError, match="decay"):
        VQVAE(x_shape=(16,), channels=(4,), decay=1.5)


def test_guide_trace_has_the_factor_only_while_training(device):
    vq = small(device)
    x = binary(3, device)
    assert "vq" in poutine.trace(vq.guide).get_trace(x).nodes
    vq.eval()
    with torch.no_grad():
        assert "vq" not in poutine.trace(vq.guide).get_trace(x).nodes
    pyro.clear_param_store()


@pytest.mark.parametrize("threshold, alive", [(None, True), (0.0, False)])
def test_the_command_lines_vq_vae_keeps_its_codebook_alive_on_the_digits(threshold, alive, device):
    # probae train --model vq-vae: restarts by default; without them (threshold 0) the
    # 512 entries collapse onto one within a few epochs on this data
    from probae import data
    from probae.models import families

    train = data.load("digits", "train")
    config = {"model": "vq-vae"}
    if threshold is not None:
        config["dead_code_threshold"] = threshold
    pyro.set_rng_seed(0)
    vq = families.build(config, x_shape=train.x.shape[1:]).to(device)
    probae.fit(
        vq, train.x[:640].to(device), epochs=3, batch_size=64, binarize="dynamic", progress=False
    )
    used = vq.codebook_usage(data.binarize(train.x[640:960], seed=0).to(device)).used
    assert (used > 20) if alive else (used <= 2)
