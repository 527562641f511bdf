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


def test_burda_schedule_is_the_papers():
    """3^i epochs at 1e-3 * 10^(-i/7), i = 0..7: 3280 epochs from 1e-3 down to 1e-4."""
    spec = importlib.util.spec_from_file_location("burda", ROOT / "bench" / "burda_mnist.py")
    burda = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(burda)
    assert burda.total_epochs() == 3280
    assert burda.lr_at(0) == pytest.approx(1e-3)
    assert burda.lr_at(1) == pytest.approx(1e-3 * 10 ** (-1 / 7))  # stage 1 starts at epoch 1
    assert burda.lr_at(3279) == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        burda.lr_at(3280)


def test_peers_shared_evaluator_is_probaes_estimate(device):
    """The hand-written IWAE weights of bench/peers.py are probae's log-weights of the same
    net: at the same draws of z the two agree to rounding."""
    from probae import importance

    spec = importlib.util.spec_from_file_location("peers", ROOT / "bench" / "peers.py")
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    encoder, decoder = peers.iwae_nets(0)
    vae = VAE((peers.X_DIM,), peers.Z_DIM, encoder=encoder, decoder=decoder).to(device)
    x = torch.bernoulli(torch.full((5, peers.X_DIM), 0.3, device=device))
    with torch.no_grad():
        pair = importance.traces(vae.model, vae.guide, (x,), 3, 1)
        ours = importance.log_weights(vae.model, vae.guide, (x,), 3, 1, trace_pair=pair)
        loc, scale = encoder(x)
        eps = (pair[0].nodes["z"]["value"] - loc) / scale
        hand = peers.log_weights_at(encoder, decoder, x, eps)
    assert hand.shape == ours.shape == (3, 5)
    torch.testing.assert_close(hand, ours, rtol=1e-5, atol=1e-3)


def test_sample_quality_benchmark_runs(capsys, device, tmp_path):
    spec = importlib.util.spec_from_file_location("sq", ROOT / "bench" / "sample_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(
        ["--models", "vae,ae", "--epochs", "1", "--num-samples", "300", "--components", "2"]
        + ["--classifier-epochs", "1", "--device", str(device), "--cache", str(tmp_path)]
    )
    out = capsys.readouterr().out
    for name in ("training data", "vae / prior", "vae / mixture on draws", "ae / mixture"):
        assert name in out
    assert "ae / prior" not in out.replace("vae / prior", "")
