"""The overhead benchmark compares equal work: its hand-written ELBO is Pyro's."""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from probae import VAE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def overhead():
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "bench" / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hand_written_elbo_equals_pyros_on_the_same_noise(overhead, device):
    vae = VAE(x_shape=(30,), z_dim=4, hidden=(16,)).to(device)
    hand = overhead.HandStep(copy.deepcopy(vae.encoder), copy.deepcopy(vae.decoder), 1e-3)
    x = torch.bernoulli(torch.full((9, 30), 0.4, device=device))
    ours, theirs = overhead.same_noise_losses(vae, hand, x)
    assert ours == pytest.approx(theirs, rel=1e-5)
    # and a different draw gives a different number: the noise really is shared
    assert overhead.same_noise_losses(vae, hand, x, seed=2)[0] != pytest.approx(ours, rel=1e-6)


def test_benchmark_runs(overhead, capsys, device):
    threads = torch.get_num_threads()
    try:
        overhead.main(
            ["--device", str(device), "--steps", "2", "--repeats", "1", "--warmup", "1"]
            + ["--fit-epochs", "1", "--batch-size", "16"]
        )
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "same ELBO on the same noise: yes" in out
    assert "overhead ratio (probae step / hand-written step):" in out
