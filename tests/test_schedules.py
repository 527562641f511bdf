"""Schedules: learning-rate multipliers against their formulas, KL warm-up, and the
capacity objective of Burgess et al. against its closed form."""

import math

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

import probae
from probae import VAE, data, schedules


@pytest.fixture(scope="module")
def digits():
    return data.binarize(data.load("digits", "train")[:128])


def test_multipliers_follow_their_formulas():
    total, per_epoch = 100, 10
    cosine = schedules.Cosine(final=0.1)
    assert cosine(0, per_epoch, total) == pytest.approx(1.0)
    assert cosine(50, per_epoch, total) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine(100, per_epoch, total) == pytest.approx(0.1)
    step = schedules.Step(epochs=3, gamma=0.5)
    assert [step(e * per_epoch, per_epoch, total) for e in (0, 2, 3, 6, 9)] == [
        1, 1, 0.5, 0.25, 0.125,
    ]  # fmt: skip
    assert schedules.Exponential(0.9)(25, per_epoch, total) == pytest.approx(0.81)
    warm = schedules.Warmup(2) * schedules.Cosine()
    assert warm(0, per_epoch, total) == pytest.approx(1 / 20 * cosine_at(0, total))
    assert warm(19, per_epoch, total) == pytest.approx(cosine_at(19, total))
    with pytest.raises(ValueError, match="lr_schedule"):
        schedules.named("linear")


def cosine_at(step, total):
    return 0.5 * (1 + math.cos(math.pi * step / total))


def test_fit_applies_named_and_torch_schedules(device, digits):
    vae = VAE((64,), 4, hidden=(16,)).to(device)
    history = probae.fit(vae, digits, epochs=4, batch_size=32, lr=0.01, lr_schedule="cosine")
    # the last step of epoch e (4 steps an epoch) ran at step 4e - 1 of 16
    expected = [0.01 * cosine_at(4 * e - 1, 16) for e in range(1, 5)]
    assert history.lr == pytest.approx(expected)
    history = probae.fit(
        vae, digits, epochs=3, batch_size=32, lr=0.01,
        lr_schedule=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
    )  # fmt: skip
    assert history.lr == pytest.approx([0.01, 0.005, 0.0025])
    with pytest.raises(TypeError, match="lr_schedule"):
        probae.fit(vae, digits, lr_schedule=3)


def test_kl_warmup_is_beta_warmup(device, digits):
    vae = VAE((64,), 4, hidden=(16,), beta=2.0).to(device)
    history = probae.fit(vae, digits, epochs=3, batch_size=32,
                         kl_schedule=schedules.KLWarmup(2))  # fmt: skip
    assert history.beta == pytest.approx([1.0, 2.0, 2.0])
    assert vae.beta == 2.0
    with pytest.raises(ValueError, match="not both"):
        probae.fit(vae, digits, beta_warmup=2, kl_schedule=schedules.KLWarmup(2))


@pytest.mark.parametrize("step", [0, 30, 100, 250])
def test_capacity_objective_is_distortion_plus_gamma_abs_kl_minus_c(device, digits, step):
    vae = VAE((64,), 4, hidden=(16,)).to(device)
    x = digits.x[:48].to(device)
    capacity = schedules.Capacity(max_nats=5.0, steps=100, gamma=30.0)
    capacity.step = step
    c_t = 5.0 * min(1.0, step / 100)
    assert capacity.capacity() == pytest.approx(c_t)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum(-1)  # closed form, per point
        pyro.set_rng_seed(3)
        objective = capacity.differentiable_loss(vae.model, vae.guide, x)
        pyro.set_rng_seed(3)  # the same draw of z: the ELBO is distortion + KL
        negative_elbo = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x)
    distortion = negative_elbo - kl.sum()
    expected = distortion + 48 * 30.0 * (kl.mean() - c_t).abs()
    assert objective.item() == pytest.approx(expected.item(), rel=1e-5)


def test_capacity_schedule_drives_training(device, digits):
    vae = VAE((64,), 4, hidden=(16,)).to(device)
    capacity = schedules.Capacity(max_nats=3.0, steps=40, gamma=50.0)
    history = probae.fit(vae, digits, epochs=16, batch_size=32, lr=1e-2, kl_schedule=capacity)
    assert capacity.step == 63  # applied at the start of the last of 64 steps
    # the KL follows C up to its maximum (reached at epoch 10), then stays near it
    assert sum(history.rate[:3]) / 3 < 1.0
    assert sum(history.rate[-4:]) / 4 == pytest.approx(3.0, abs=0.6)
    # reused by a second run, its terms are still counted once
    again = probae.fit(vae, digits, epochs=1, batch_size=32, lr=1e-2, kl_schedule=capacity)
    assert again.rate[0] == pytest.approx(history.rate[-1], rel=0.5)


def test_fit_capacity_is_the_capacity_schedule(device, digits):
    """``fit(capacity=C)`` trains exactly as ``fit(kl_schedule=C)`` (same seed, same steps)."""
    runs = []
    for key in ("capacity", "kl_schedule"):
        torch.manual_seed(0)
        vae = VAE((64,), 4, hidden=(16,)).to(device)
        capacity = schedules.Capacity(max_nats=2.0, steps=8, gamma=10.0)
        probae.fit(vae, digits, epochs=2, batch_size=32, seed=1, **{key: capacity})
        runs.append(vae.state_dict())
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), key
    with pytest.raises(ValueError, match="not both"):
        probae.fit(VAE((64,), 4), digits, capacity=capacity, kl_schedule=capacity)
    with pytest.raises(TypeError, match="capacity must be"):
        probae.fit(VAE((64,), 4), digits, capacity=25.0)
