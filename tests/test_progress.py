"""Progress where a person watches: a bar in a terminal or a notebook, plain lines in a
log file or CI, nothing with progress=False; for training and the long evaluations."""

import io
import re
import sys
import types

import pytest
import torch

import probae
from probae import VAE, _progress, data, evaluate

EPOCH_LINE = re.compile(
    r"^probae\.fit epoch (\d+)/(\d+): loss (\S+), rate (\S+), distortion (\S+), "
    r"validation loss (\S+); [\d.]+ s, [\d,.]+ points/s$"
)


@pytest.fixture(scope="module")
def digits():
    train, test = data.load("digits", "train")[:96], data.load("digits", "test")[:32]
    return data.binarize(train, seed=0), data.binarize(test, seed=1)


def _vae(device):
    return VAE((64,), 2, hidden=(16,)).to(device)


def test_fit_writes_a_line_per_epoch_to_a_stream_that_is_not_a_terminal(
    device, digits, capfd, monkeypatch
):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(_progress, "EVERY", float("inf"))  # no line within an epoch
    train, test = digits
    history = probae.fit(_vae(device), train, epochs=3, batch_size=32, validation=test)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("probae")]
    assert len(lines) == 3, lines
    for epoch, line in enumerate(lines, start=1):
        match = EPOCH_LINE.match(line)
        assert match, line
        assert (int(match[1]), int(match[2])) == (epoch, 3)
        i = epoch - 1
        # the figures are the History's own, not a second computation
        assert float(match[3]) == pytest.approx(history.train_loss[i], abs=6e-4)
        assert float(match[4]) == pytest.approx(history.rate[i], abs=6e-4)
        assert float(match[5]) == pytest.approx(history.distortion[i], abs=6e-4)
        assert float(match[6]) == pytest.approx(history.val_loss[i], abs=6e-4)
        # the loss is its terms' sum
        assert float(match[3]) == pytest.approx(float(match[4]) + float(match[5]), abs=2e-3)


def test_fit_writes_nothing_with_progress_false(device, digits, capfd):
    train, test = digits
    probae.fit(_vae(device), train, epochs=2, batch_size=32, validation=test, progress=False)
    assert capfd.readouterr().err == ""


def test_a_long_epoch_gets_a_line_within_it(device, digits, capfd, monkeypatch):
    monkeypatch.setattr(_progress, "EVERY", 0.0)  # every step is "10 s later"
    train, _ = digits
    probae.fit(_vae(device), train, epochs=2, batch_size=32)
    lines = capfd.readouterr().err.splitlines()
    steps = [line for line in lines if ", step " in line]
    assert [line.split(":")[0] for line in steps] == [
        f"probae.fit epoch {e}/2, step {s}/3" for e in (1, 2) for s in (1, 2, 3)
    ]
    assert sum(line.startswith("probae.fit epoch") and ", step" not in line for line in lines) == 2


def test_a_terminal_gets_a_bar_and_no_lines(device, digits, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("CI", raising=False)
    train, _ = digits
    probae.fit(_vae(device), train, epochs=2, batch_size=32)
    written = terminal.getvalue()
    assert "\r" in written and "2/2" in written and "epoch" in written
    assert "probae.fit epoch" not in written


def test_a_notebook_gets_the_bar(monkeypatch):
    class Shell:
        config = {"IPKernelApp": {"connection_file": "kernel.json"}}

    fake = types.ModuleType("IPython")
    fake.get_ipython = Shell
    monkeypatch.setitem(sys.modules, "IPython", fake)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert _progress.front_end(None) == "bar"
    assert _progress.front_end(False) is None
    fake.get_ipython = lambda: None  # IPython loaded in a terminal shell, or not running
    assert _progress.front_end(None) == "lines"


def test_progress_refuses_anything_but_a_bool_or_none(device, digits):
    with pytest.raises(TypeError, match="progress"):
        probae.fit(_vae(device), digits[0], epochs=1, progress="yes")
    with pytest.raises(TypeError, match="progress"):
        evaluate.log_likelihood(_vae(device), digits[1], num_samples=2, progress=1)


def test_iwae_evaluation_reports_points_and_is_quiet_when_short(device, digits, capfd, monkeypatch):
    vae = _vae(device)
    test = digits[1]
    monkeypatch.setattr(_progress, "EVERY", 3600.0)
    quick = evaluate.log_likelihood(vae, test, num_samples=4, batch_size=8)
    assert capfd.readouterr().err == ""  # done before a line was due: nothing to say
    monkeypatch.setattr(_progress, "EVERY", 0.0)
    torch.manual_seed(0)
    evaluate.log_likelihood(vae, test, num_samples=4, batch_size=8)
    lines = capfd.readouterr().err.splitlines()
    counts = [int(re.match(r"probae IWAE: (\d+)/32 points", line)[1]) for line in lines]
    assert counts == [8, 16, 24, 32]
    evaluate.log_likelihood(vae, test, num_samples=4, batch_size=8, progress=False)
    assert capfd.readouterr().err == ""
    assert quick.values.shape == (32,)


def test_ais_and_disentanglement_report_the_same_way(device, capfd, monkeypatch):
    monkeypatch.setattr(_progress, "EVERY", 0.0)
    x = torch.bernoulli(torch.full((16, 4), 0.5, device=device))
    vae = VAE((4,), 2, hidden=(8,)).to(device)
    evaluate.log_likelihood(vae, x, method="ais", num_chains=2, steps=3, warmup=0)
    lines = capfd.readouterr().err.splitlines()
    assert lines and lines[-1].startswith("probae AIS: 3/3 steps (100%)")
    factors = torch.randint(0, 3, (64, 2))
    codes = torch.randn(64, 2)
    evaluate.disentanglement(lambda x: x, codes, factors=factors, num_points=64)
    lines = capfd.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"probae disentanglement: {k}/8 stages" for k in range(1, 9)
    ]
