"""fit(): losses, resume, isolation between models, user pairs, and failure modes."""

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import probae
from probae import VAE, data, evaluate, priors
from probae.train import CHECKPOINT_NAME, load_checkpoint


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train")[:256], data.load("digits", "test")[:64]


def _vae(device, **kwargs):
    kwargs.setdefault("hidden", (32,))
    return VAE((64,), 4, **kwargs).to(device)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


@pytest.mark.parametrize(
    "loss, particles", [("elbo", 1), ("meanfield", 1), ("iwae", 5), ("elbo", 3)]
)
def test_every_loss_trains_a_vae_on_digits(device, digits, loss, particles):
    train, _ = digits
    vae = _vae(device)
    history = probae.fit(
        vae,
        train,
        epochs=8,
        batch_size=32,
        loss=loss,
        num_particles=particles,
        binarize="static",
        lr=3e-3,
    )
    assert len(history) == 8
    # 64 Bernoulli pixels start near 64 log 2 = 44 nats; a working model halves that quickly
    assert history.train_loss[0] > 35
    assert history.train_loss[-1] < 0.75 * history.train_loss[0]


def test_gaussian_mixture_prior_vae_trains(device, digits):
    train, _ = digits
    vae = _vae(device, prior=priors.GaussianMixture(4, components=5))
    before = vae.prior.locs.detach().clone()
    history = probae.fit(vae, train, epochs=5, batch_size=32, binarize="dynamic", lr=3e-3)
    assert history.train_loss[-1] < history.train_loss[0]
    assert not torch.equal(before, vae.prior.locs.detach())


def test_resume_reproduces_the_uninterrupted_run(device, digits, tmp_path):
    if device.type != "cpu":
        pytest.skip("bitwise reproducibility is promised on CPU")
    train, test = digits
    kwargs = dict(batch_size=64, binarize="dynamic", validation=test, seed=3)

    pyro.set_rng_seed(0)
    straight = _vae(device)
    h_straight = probae.fit(straight, train, epochs=4, checkpoint_dir=tmp_path / "a", **kwargs)

    pyro.set_rng_seed(0)
    interrupted = _vae(device)
    probae.fit(interrupted, train, epochs=2, checkpoint_dir=tmp_path / "b", **kwargs)
    pyro.set_rng_seed(0)
    resumed = _vae(device)  # a fresh process would rebuild the model the same way
    h_resumed = probae.fit(
        resumed, train, epochs=4, checkpoint_dir=tmp_path / "b", resume=True, **kwargs
    )
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert h_resumed.train_loss == h_straight.train_loss
    assert h_resumed.val_loss == h_straight.val_loss
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"] == 4


def test_two_models_trained_one_after_the_other_both_train(device, digits):
    train, _ = digits
    first, second = _vae(device), _vae(device)
    first_init, second_init = _snapshot(first), _snapshot(second)
    probae.fit(first, train, epochs=2, binarize="static")
    first_trained = _snapshot(first)
    probae.fit(second, train, epochs=2, binarize="static")
    for key in first_init:
        assert not torch.equal(first_init[key], first_trained[key]), key
        assert not torch.equal(second_init[key], _snapshot(second)[key]), key
        # training the second model left the first one alone
        assert torch.equal(first_trained[key], _snapshot(first)[key]), key


@pytest.mark.filterwarnings("ignore:For .* too heavy-tailed to trust")
def test_a_users_own_pair_with_pyro_module_trains_and_evaluates(device, digits):
    train, test = digits
    encoder = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8)).to(device)
    decoder = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 64)).to(device)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(4), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, raw = encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    before = copy.deepcopy(decoder.state_dict())
    train_bin = data.binarize(train.to(device), seed=1)
    history = probae.fit((model, guide), train_bin, epochs=6, batch_size=32, lr=3e-3)
    assert history.train_loss[-1] < 0.8 * history.train_loss[0]
    assert not torch.equal(before["0.weight"], decoder.state_dict()["0.weight"])
    test_bin = data.binarize(test.to(device), seed=0)
    elbo = evaluate.elbo((model, guide), test_bin, num_particles=50)
    ll = evaluate.log_likelihood((model, guide), test_bin, num_samples=200)
    assert elbo.shape == ll.values.shape == (64,)
    assert ll.mean > elbo.mean().item()
    assert ll.mean > -history.train_loss[-1] - 10


def test_beta_warmup_rises_linearly_and_restores_beta(device, digits):
    train, _ = digits
    vae = _vae(device, beta=2.0)
    history = probae.fit(vae, train, epochs=4, batch_size=64, binarize="static", beta_warmup=2)
    # 256 points at batch 64: 4 steps per epoch, beta reaches 2 at step 8 (end of epoch 2)
    assert history.beta == pytest.approx([1.0, 2.0, 2.0, 2.0])
    assert vae.beta == 2.0


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_non_finite_loss_names_epoch_and_step_and_keeps_the_checkpoint(device, digits, tmp_path):
    train, _ = digits
    vae = _vae(device)
    probae.fit(vae, train, epochs=1, binarize="static", checkpoint_dir=tmp_path)
    saved = (tmp_path / CHECKPOINT_NAME).read_bytes()
    with torch.no_grad():
        vae.decoder.net[0].weight.fill_(float("nan"))
    # a fresh folder has no good checkpoint to name, and the error says so
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1.*no checkpoint was written"):
        probae.fit(vae, train, epochs=2, binarize="static", checkpoint_dir=tmp_path / "other")
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == saved


def test_corrupt_checkpoint_is_a_clear_error(device, digits, tmp_path):
    train, _ = digits
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint\.pt.* corrupt"):
        probae.fit(
            _vae(device), train, epochs=1, binarize="static", checkpoint_dir=tmp_path, resume=True
        )


def test_checkpoint_of_another_model_is_refused(device, digits, tmp_path):
    train, _ = digits
    probae.fit(_vae(device), train, epochs=1, binarize="static", checkpoint_dir=tmp_path)
    other = VAE((64,), 6, hidden=(32,)).to(device)
    with pytest.raises(ValueError, match="does not match this model"):
        probae.fit(other, train, epochs=2, binarize="static", checkpoint_dir=tmp_path, resume=True)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(loss="elbow"), ValueError, "unknown loss='elbow'"),
        (dict(binarize="sometimes"), ValueError, "binarize must be one of"),
        (dict(epochs=0), ValueError, "epochs must be a positive integer"),
        (dict(resume=True), ValueError, "resume=True needs checkpoint_dir"),
        (dict(), ValueError, r"Bernoulli likelihood needs x in \{0, 1\}"),
    ],
)
def test_bad_arguments_are_named(device, digits, kwargs, error, message):
    with pytest.raises(error, match=message):
        probae.fit(_vae(device), digits[0], **kwargs)


def test_bad_data_is_named(device):
    vae = _vae(device)
    with pytest.raises(ValueError, match=r"data must have shape \(N, 64\).*\(10, 63\)"):
        probae.fit(vae, torch.rand(10, 63), binarize="static")
    with pytest.raises(TypeError, match="floating-point"):
        probae.fit(vae, torch.ones(10, 64, dtype=torch.long))
    bad = torch.rand(10, 64)
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        probae.fit(vae, bad, binarize="static")
    with pytest.raises(TypeError, match="model must be a probae model"):
        probae.fit(object(), torch.rand(10, 64))
