"""Host-device synchronisations in the hot loops, counted on the emulated CUDA device
(``FAKECUDA=1 PROBAE_DEVICE=cuda``, see ../shared/fakecuda): at most one per training
step (the loss read to stop on a non-finite value), none per chunk of importance
samples once the first draw has been checked."""

import pytest
import torch

import probae
from probae import VAE, data, evaluate, likelihoods, models

fakecuda = pytest.importorskip("fakecuda", reason="counts need the emulated CUDA device")


@pytest.fixture
def cuda(device):
    if device.type != "cuda" or not hasattr(fakecuda, "SYNCS"):
        pytest.skip("run with FAKECUDA=1 PROBAE_DEVICE=cuda to count synchronisations")
    return device


def _syncs(run) -> int:
    with fakecuda._lock:
        before = sum(fakecuda.SYNCS.values())
    run()
    with fakecuda._lock:
        return sum(fakecuda.SYNCS.values()) - before


def _steps_difference(make, runs, units):
    """Synchronisations per unit of work: (count of the longer run - the shorter) / units."""
    short, long = (_syncs(lambda r=r: r(make())) for r in runs)
    return (long - short) / units


N, B = 128, 32  # 4 steps per epoch


@pytest.mark.parametrize(
    "family, loss",
    [("vae", "elbo"), ("vae", "meanfield"), ("vae", "iwae"), ("ae", "elbo")],
)
def test_at_most_one_sync_per_training_step(family, loss, cuda):
    """Per step: the loss read. Per epoch besides its steps: at most two (the epoch's
    loss terms, read together, and the finiteness check of parameters and optimizer state)."""
    train = data.load("digits", "train")[: 2 * N]

    def make():
        torch.manual_seed(0)
        if family == "ae":
            return models.AE((64,), 4, likelihood=likelihoods.Gaussian(0.5), hidden=(16,))
        return VAE((64,), 4, hidden=(16,)).to(cuda)

    def fit(epochs, n):
        def run(model):
            probae.fit(
                model.to(cuda),
                train[:n],
                epochs=epochs,
                batch_size=B,
                loss=loss,
                num_particles=3 if loss == "iwae" else 1,
                binarize="dynamic" if family == "vae" else None,
                progress=False,
            )

        return run

    # the same epochs over twice the data: N // B more steps in each of 2 epochs
    per_step = _steps_difference(make, (fit(2, N), fit(2, 2 * N)), units=2 * N // B)
    assert per_step <= 1
    per_epoch = _steps_difference(make, (fit(1, N), fit(3, N)), units=2) - N // B * per_step
    assert per_epoch <= 2


def test_no_sync_per_chunk_of_importance_samples(cuda):
    test = data.binarize(data.load("digits", "test")[:64], seed=0)
    vae = VAE((64,), 4, hidden=(16,)).to(cuda)

    def log_likelihood(chunks):
        return lambda model: evaluate.log_likelihood(
            model, test, num_samples=10 * chunks, chunk_size=10, batch_size=32, psis=False
        )

    # 2 batches of 32 points; 2 more chunks in each
    assert _steps_difference(lambda: vae, (log_likelihood(2), log_likelihood(4)), 4) == 0
