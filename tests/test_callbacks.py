"""The History's loss terms against closed forms, early stopping on a scripted
validation curve, and the callbacks fit itself uses."""

import pyro
import pytest
import torch

import probae
from probae import AE, VAE, SparseAE, callbacks, data, likelihoods, train


@pytest.fixture(scope="module")
def digits():
    return data.binarize(data.load("digits", "train")[:160]), data.binarize(
        data.load("digits", "test")[:48]
    )


def _vae(device, **kwargs):
    return VAE((64,), 4, hidden=(16,), **kwargs).to(device)


def _closed_form_kl(vae, x):
    """KL(N(mu, sigma) || N(0, I)) per point and dimension, by hand."""
    with torch.no_grad():
        loc, scale = vae.encoder(x)
    return 0.5 * (loc**2 + scale**2 - 1) - scale.log()


def test_distortion_plus_rate_is_the_loss_every_epoch(device, digits):
    train_set, val = digits
    vae = _vae(device)
    history = probae.fit(
        vae, train_set, epochs=3, batch_size=32, loss="meanfield", validation=val, lr=3e-3
    )
    for epoch in range(3):
        total = history.distortion[epoch] + history.rate[epoch]
        assert total == pytest.approx(history.train_loss[epoch], rel=1e-6)
        assert history.penalty[epoch] == 0
        val_total = history.val_distortion[epoch] + history.val_rate[epoch]
        assert val_total == pytest.approx(history.val_loss[epoch], rel=1e-6)
    # the last epoch's validation rate and per-dimension KLs are the closed form
    kl = _closed_form_kl(vae, val.x.to(device)).mean(0)
    assert history.kl_per_dim[-1] == pytest.approx(kl.tolist(), rel=1e-4, abs=1e-6)
    assert sum(history.kl_per_dim[-1]) == pytest.approx(history.val_rate[-1], rel=1e-5)
    assert 0 <= history.active_units[-1] <= 4
    assert history.rate[-1] > 0 and history.distortion[-1] > 0


def test_a_deterministic_autoencoder_has_distortion_and_penalty_only(device, digits):
    train_set, _ = digits
    gaussian = data.Dataset(data.load("digits", "train").x[:160])
    ae = AE((64,), 4, likelihood=likelihoods.Gaussian(0.5), hidden=(16,)).to(device)
    history = probae.fit(ae, gaussian, epochs=2, batch_size=32)
    assert history.rate == [0.0, 0.0]
    assert history.penalty == [0.0, 0.0]  # a flat prior adds nothing
    sparse = SparseAE((64,), 4, penalty="kl", weight=0.5, hidden=(16,)).to(device)
    history = probae.fit(sparse, train_set, epochs=2, batch_size=32)
    for epoch in range(2):
        assert history.penalty[epoch] > 0
        total = history.distortion[epoch] + history.penalty[epoch] + history.rate[epoch]
        assert total == pytest.approx(history.train_loss[epoch], rel=1e-6)


class _Snapshots(callbacks.Callback):
    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, state):
        self.weights[state.epoch] = {k: v.clone() for k, v in state.module.state_dict().items()}


@pytest.mark.parametrize(
    "curve, patience, stop, best",
    [
        ([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.0, 1.0], 3, 6, 3),
        ([5.0, 4.0, 4.0, 3.9, 4.5, 4.6], 2, 6, 4),  # equal is not better
        ([3.0, 2.0, 1.0], 1, 3, 3),  # never stops early, ends at the best
    ],
)
def test_early_stopping_follows_its_rule(
    device, digits, monkeypatch, tmp_path, curve, patience, stop, best
):
    train_set, val = digits
    scripted = iter(curve)
    monkeypatch.setattr(train.epoch, "_validation_loss", lambda *a, **k: {"loss": next(scripted)})
    snapshots = _Snapshots()
    vae = _vae(device)
    history = probae.fit(
        vae, train_set, epochs=len(curve), batch_size=32, validation=val, lr=1e-2,
        early_stopping=patience, callbacks=[snapshots], checkpoint_dir=tmp_path,
    )  # fmt: skip
    assert len(history) == stop
    assert history.val_loss == curve[:stop]
    for key, value in vae.state_dict().items():
        assert torch.equal(value, snapshots.weights[best][key]), key
    if best < stop:  # the weights did move after the best epoch
        assert not torch.equal(snapshots.weights[best]["decoder.net.0.weight"],
                               snapshots.weights[stop]["decoder.net.0.weight"])  # fmt: skip
    saved = probae.saving.read_checkpoint(tmp_path / callbacks.BEST_NAME)
    assert saved["epoch"] == best
    for key, value in saved["weights"]["module"].items():
        assert torch.equal(value.cpu(), snapshots.weights[best][key].cpu()), key


def test_early_stopping_needs_validation(device, digits):
    with pytest.raises(ValueError, match="validation"):
        probae.fit(_vae(device), digits[0], epochs=2, early_stopping=2)
    with pytest.raises(ValueError, match="patience"):
        callbacks.EarlyStopping(patience=0)
    with pytest.raises(TypeError, match="callbacks"):
        probae.fit(_vae(device), digits[0], callbacks=[print])


def test_callbacks_see_every_step_with_its_terms(device, digits):
    seen = []

    class Steps(callbacks.Callback):
        def on_step_end(self, state, loss, terms, size):
            seen.append((state.step, loss, float(sum(terms.values())), size))

    probae.fit(_vae(device), digits[0], epochs=2, batch_size=64, loss="meanfield",
               callbacks=[Steps()])  # fmt: skip
    assert [s[0] for s in seen] == list(range(1, 7))  # 160 points: 3 steps an epoch
    assert [s[3] for s in seen] == [64, 64, 32] * 2
    for _, loss, terms, _ in seen:
        assert terms == pytest.approx(loss, rel=1e-6)


class _Calls(callbacks.Callback):
    """Notes every hook called on it, with the steps done at the time."""

    def __init__(self):
        self.calls, self.errors = [], []

    def on_train_begin(self, state):
        self.calls.append(("train_begin", state.step))

    def on_step_begin(self, state):
        self.calls.append(("step_begin", state.step))

    def on_step_end(self, state, loss, terms, size):
        self.calls.append(("step_end", state.step))

    def on_epoch_end(self, state):
        self.calls.append(("epoch_end", state.epoch))

    def on_train_end(self, state):
        self.calls.append(("train_end", state.step))

    def on_exception(self, state, error):
        self.errors.append(error)


def test_every_callback_is_told_when_training_raises(device, digits):
    class Raises(callbacks.Callback):
        def on_epoch_end(self, state):
            if state.epoch == 2:
                raise RuntimeError("the epoch could not be logged")

    class FailsToClose(callbacks.Callback):
        def on_exception(self, state, error):
            raise OSError("the log is gone")

    first, last = _Calls(), _Calls()
    vae = _vae(device)
    with (
        pytest.raises(RuntimeError, match="could not be logged") as raised,
        pytest.warns(RuntimeWarning, match="FailsToClose.on_exception raised"),
    ):
        probae.fit(vae, digits[0], epochs=4, batch_size=64, beta_warmup=4,
                   callbacks=[first, Raises(), FailsToClose(), last])  # fmt: skip
    # each callback is told once, with the error, and never that training ended
    assert first.errors == [raised.value] and last.errors == [raised.value]
    assert ("train_end", 6) not in first.calls + last.calls
    assert ("epoch_end", 2) in first.calls and ("epoch_end", 2) not in last.calls
    # the KL warm-up is ended too: beta is the model's again, not its warm-up value
    assert vae.beta == 1.0
    # on_step_begin comes before every step (steps done so far), on_step_end after it
    steps = [c for c in first.calls if c[0].startswith("step")]
    assert steps == [(kind, k + (kind == "step_end")) for k in range(6) for kind in
                     ("step_begin", "step_end")]  # fmt: skip


def test_a_failure_in_set_up_reaches_no_callback(device, digits):
    calls = _Calls()
    with pytest.raises(ValueError, match="binarize"):
        probae.fit(_vae(device), digits[0], binarize="always", callbacks=[calls])
    assert calls.calls == [] and calls.errors == []


def test_gradient_clipping_bounds_the_step(device, digits):
    pyro.set_rng_seed(0)
    vae = _vae(device)
    before = torch.cat([p.detach().flatten().clone() for p in vae.parameters()])
    probae.fit(vae, digits[0][:32], epochs=1, batch_size=32, clip_grad_norm=1e-3,
               optimizer=lambda p: torch.optim.SGD(p, lr=1.0))  # fmt: skip
    after = torch.cat([p.detach().flatten() for p in vae.parameters()])
    assert 0 < (after - before).norm() <= 1e-3 * (1 + 1e-5)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        probae.fit(vae, digits[0], clip_grad_norm=-1)


def test_bf16_autocast_trains_with_float32_sums(device, digits):
    if device.type != "cpu":
        pytest.skip("bf16 autocast checked on CPU")
    seen = []

    class Dtypes(callbacks.Callback):
        def on_step_end(self, state, loss, terms, size):
            seen.append(terms["distortion"].dtype)

    vae = _vae(device)
    history = probae.fit(vae, digits[0], epochs=3, batch_size=32, precision="bf16", lr=3e-3,
                         callbacks=[Dtypes()])  # fmt: skip
    assert set(seen) == {torch.float32}
    assert history.train_loss[-1] < history.train_loss[0]
    assert all(p.dtype == torch.float32 for p in vae.parameters())
    with pytest.raises(ValueError, match="precision"):
        probae.fit(vae, digits[0], precision="fp8")


def test_tensorboard_logs_the_history(device, digits, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = probae.fit(_vae(device), digits[0], epochs=2, batch_size=64, validation=digits[1],
                         callbacks=[callbacks.TensorBoard(tmp_path)])  # fmt: skip
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    logged = [e.value for e in events.Scalars("epoch/train_loss")]
    assert logged == pytest.approx(history.train_loss, rel=1e-6)
    assert [e.value for e in events.Scalars("kl_per_dim/0")] == pytest.approx(
        [row[0] for row in history.kl_per_dim], rel=1e-6
    )


def test_training_pictures_from_a_history(device, digits, tmp_path):
    import matplotlib.image

    from probae import viz

    history = probae.fit(_vae(device), digits[0], epochs=3, batch_size=64, loss="meanfield",
                         validation=digits[1])  # fmt: skip
    for path in (
        viz.rate_distortion(history, tmp_path / "rd.png"),
        viz.kl_per_dimension(history, tmp_path / "kl.png"),
    ):
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 50 and image[..., :3].std() > 0.01
    with pytest.raises(ValueError, match="KL per dimension"):
        viz.kl_per_dimension(probae.History(), tmp_path / "none.png")
    with pytest.raises(ValueError, match="rate and distortion"):
        viz.rate_distortion(
            {"epoch": [1], "rate": [None], "distortion": [None]}, tmp_path / "x.png"
        )
