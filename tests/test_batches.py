"""Streamed data (torch Datasets and DataLoaders) train and evaluate exactly as the same
data held in memory."""

import pyro
import pytest
import torch

import probae
from probae import VAE, batches, data, evaluate


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train")[:192]


class Items(torch.utils.data.Dataset):
    """A plain map-style data set of (image, label) items, as torchvision gives them."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index].reshape(1, 8, 8), int(self.y[index])


def _train(device, data_, **kwargs):
    pyro.set_rng_seed(0)
    vae = VAE((64,), 4, hidden=(16,)).to(device)
    history = probae.fit(
        vae, data_, epochs=2, batch_size=32, seed=1, binarize="dynamic", lr=3e-3, **kwargs
    )
    return vae, history


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streamed_training_gives_the_in_memory_parameters(device, digits, num_workers):
    if device.type != "cpu":
        pytest.skip("bitwise equality is promised on CPU")
    in_memory, h_memory = _train(device, digits, validation=digits[:64])
    items = Items(digits.x, digits.y)
    streamed, h_streamed = _train(
        device, items, validation=Items(digits.x[:64], digits.y[:64]), in_memory=False,
        num_workers=num_workers,
    )  # fmt: skip
    for key, value in in_memory.state_dict().items():
        assert torch.equal(value, streamed.state_dict()[key]), key
    assert h_streamed.train_loss == h_memory.train_loss
    assert h_streamed.val_loss == pytest.approx(h_memory.val_loss, rel=1e-6)
    # and training moved the parameters, so equality is not between untouched models
    pyro.set_rng_seed(0)
    untouched = VAE((64,), 4, hidden=(16,))
    assert not torch.equal(untouched.decoder.net[0].weight, streamed.decoder.net[0].weight)


def test_a_small_torch_dataset_is_held_in_memory(digits):
    held = batches.materialize(Items(digits.x, digits.y), x_shape=(64,))
    assert isinstance(held, data.Dataset)
    assert torch.equal(held.x, digits.x)  # (1, 8, 8) items laid out as the model's (64,)
    assert torch.equal(held.y, digits.y)
    assert batches.materialize(Items(digits.x, digits.y), in_memory=False).__class__ is Items


@pytest.mark.filterwarnings("ignore:For .* of the")
def test_streamed_log_likelihood_equals_the_tensor_path(device, digits, monkeypatch):
    vae, _ = _train(device, digits)
    x = data.binarize(digits.x[:40], seed=0)
    kwargs = dict(num_samples=50, chunk_size=20, batch_size=16)
    pyro.set_rng_seed(7)
    expected = evaluate.log_likelihood(vae, x, **kwargs)
    monkeypatch.setattr(batches, "MEMORY_BUDGET", 0)  # too big to hold: streamed
    pyro.set_rng_seed(7)
    got = evaluate.log_likelihood(vae, Items(x, digits.y[:40]), **kwargs)
    assert torch.equal(got.values.cpu(), expected.values.cpu())
    assert torch.equal(got.khat.cpu(), expected.khat.cpu())
    # a DataLoader with its own generator leaves the global one alone: same draws
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x), batch_size=16, generator=torch.Generator()
    )
    pyro.set_rng_seed(7)
    assert torch.equal(evaluate.log_likelihood(vae, loader, **kwargs).values, got.values)


def test_streamed_batches_are_checked_as_they_arrive(device, digits):
    bad = data.binarize(digits.x)
    bad[100, 3] = float("nan")
    vae = VAE((64,), 4, hidden=(16,)).to(device)
    with pytest.raises(ValueError, match="NaN"):
        probae.fit(vae, Items(bad, digits.y), epochs=1, batch_size=32, in_memory=False)
    with pytest.raises(ValueError, match="static"):
        probae.fit(vae, Items(digits.x, digits.y), binarize="static", in_memory=False)
    with pytest.raises(TypeError, match="in_memory"):
        probae.fit(vae, digits, in_memory="yes")


def test_a_dataloader_keeps_its_own_batches(device, digits):
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.binarize(digits.x)), batch_size=50, shuffle=True
    )
    vae = VAE((64,), 4, hidden=(16,)).to(device)
    history = probae.fit(vae, loader, epochs=3, lr=1e-2)
    assert len(history) == 3 and history.train_loss[-1] < history.train_loss[0]


def test_streamed_labels_condition_a_cvae_as_in_memory(device, digits):
    if device.type != "cpu":
        pytest.skip("bitwise equality is promised on CPU")
    from probae import CVAE

    def train(data_, **kwargs):
        pyro.set_rng_seed(0)
        cvae = CVAE((64,), (10,), 3, hidden=(16,)).to(device)
        probae.fit(cvae, data_, epochs=2, batch_size=32, seed=2, binarize="dynamic",
                   condition="label", **kwargs)  # fmt: skip
        return cvae

    in_memory = train(digits)
    streamed = train(Items(digits.x, digits.y), in_memory=False)
    for key, value in in_memory.state_dict().items():
        assert torch.equal(value, streamed.state_dict()[key]), key


def test_every_estimator_takes_a_torch_dataset(device, digits, monkeypatch):
    vae, _ = _train(device, digits)
    x = data.binarize(digits.x[:30], seed=0)
    items = Items(x, digits.y[:30])
    monkeypatch.setattr(batches, "MEMORY_BUDGET", 0)
    expected = evaluate.reconstruction_error(vae, x)
    assert torch.equal(evaluate.reconstruction_error(vae, items), expected)
    pyro.set_rng_seed(1)
    bits = evaluate.bits_per_dim(vae, items, num_samples=10)
    pyro.set_rng_seed(1)
    assert bits == evaluate.bits_per_dim(vae, x, num_samples=10)
    assert evaluate.active_units(vae, items).count == evaluate.active_units(vae, x).count
