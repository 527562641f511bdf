"""The command line as a newcomer meets it: missing optional packages, option lists and
messages, the files a run leaves, pictures for every kind of image data."""

import csv
import fcntl
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import probae
from probae import VAE, callbacks, cli, data, priors, rundir
from probae.models import families


def test_tensorboard_missing_is_one_line_before_anything_is_created(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    run = tmp_path / "run"
    status = cli.main(["train", "--run-dir", str(run), "--epochs", "1", "--tensorboard"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines() == [
        "probae train: error: --tensorboard needs the tensorboard package: "
        "pip install 'probae[tensorboard]'"
    ]
    assert not run.exists()


def test_tensorboard_callback_refuses_a_missing_package_when_made(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'probae\[tensorboard\]'"):
        callbacks.TensorBoard(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


TINY = ["--z-dim", "2", "--hidden", "16", "--threads", "1", "--no-progress"]


def _device_args(device):
    return ["--device", str(device)]


def test_an_unknown_data_name_gets_a_suggestion_and_each_name_once():
    with pytest.raises(ValueError) as caught:
        data.load("mnis")
    message = str(caught.value)
    assert "did you mean 'mnist'?" in message
    listed = message.split("expected one of ")[1].split("]")[0]
    names = [n.strip(" '[") for n in listed.split(",")]
    assert sorted(names) == sorted(set(names)) == sorted(data.NAMES)
    for name in ("cifar10", "svhn", "celeba", "image-folder", "digits"):
        assert name in names


def test_prior_names_come_from_one_table_and_each_builds_a_vae(capsys):
    unconditional = priors.names()
    assert "vampprior" in unconditional and "conditional-normal" not in unconditional
    assert priors.names(conditional=True) == ["conditional-normal"]
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"prior p(z): {', '.join(unconditional)} (default" in help_text
    x = torch.bernoulli(torch.full((5, 64), 0.5))
    for name in unconditional:
        vae = families.build({"model": "vae", "prior": name, "z_dim": 3, "hidden": [8]}, (64,))
        assert vae.prior.z_dim == 3
        assert torch.isfinite(vae.prior().log_prob(torch.zeros(3))).all(), name
        assert torch.isfinite(probae.evaluate.elbo(vae, x)).all(), name
    vamp = families.build({"model": "vae", "prior": "vampprior", "z_dim": 3, "hidden": [8]}, (64,))
    assert vamp.prior.encoder is vamp.encoder  # the mixture of the model's own posteriors


def test_a_conditional_prior_for_a_vae_is_one_line_and_makes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    status = cli.main(["train", "--prior", "conditional-normal", "--run-dir", str(run), *TINY])
    err = capsys.readouterr().err.splitlines()
    assert status == 2 and len(err) == 1 and "conditional model" in err[0]
    assert "vampprior" in err[0]
    assert not run.exists()


def test_a_vampprior_run_trains_resumes_and_samples(tmp_path, device, capsys):
    run = tmp_path / "vamp"
    dev = _device_args(device)
    assert cli.main(["train", "--prior", "vampprior", "--run-dir", str(run), "--epochs", "1"]
                    + TINY + dev) == 0  # fmt: skip
    assert cli.main(["train", "--run-dir", str(run), "--epochs", "2", "--resume"] + TINY + dev) == 0
    assert cli.main(["sample", str(run), "-n", "4", "--threads", "1"] + dev) == 0
    assert "resuming" in capsys.readouterr().out
    assert len(_history(run)) == 2 and (run / "samples.png").is_file()


def test_resuming_a_run_in_use_says_so_and_nothing_else(tmp_path, capsys, device):
    run = tmp_path / "run"
    dev = _device_args(device)
    assert cli.main(["train", "--run-dir", str(run), "--epochs", "1", *TINY, *dev]) == 0
    capsys.readouterr()
    fd = os.open(run / rundir.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's hold
        status = cli.main(["train", "--run-dir", str(run), "--epochs", "2", "--resume", *TINY])
    finally:
        os.close(fd)
    out, err = capsys.readouterr()
    assert status == 1
    assert "in use" in err and "resuming" not in out
    assert len(_history(run)) == 1


def _history(run_dir):
    with open(run_dir / "history.csv") as handle:
        return list(csv.DictReader(handle))


def test_history_csv_holds_every_finished_epoch_when_a_run_stops(tmp_path, monkeypatch, device):
    class StopAtTwo(callbacks.Callback):
        def on_epoch_end(self, state):
            if state.epoch == 2:
                raise KeyboardInterrupt

    real = cli.train.fit
    monkeypatch.setattr(
        cli.train,
        "fit",
        lambda *a, callbacks=(), **k: real(*a, callbacks=[*callbacks, StopAtTwo()], **k),
    )
    run = tmp_path / "run"
    status = cli.main(
        ["train", "--run-dir", str(run), "--epochs", "5", *TINY, *_device_args(device)]
    )
    assert status == 130
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        total = float(row["distortion"]) + float(row["rate"]) + float(row["penalty"])
        assert total == pytest.approx(float(row["train_loss"]), rel=1e-5)
    assert not list(run.glob(".history.csv*"))


def test_csv_logger_rewrites_the_file_after_every_epoch(tmp_path, device):
    path = tmp_path / "h.csv"
    seen = []

    class Count(callbacks.Callback):
        def on_epoch_end(self, state):
            seen.append(len(path.read_text().splitlines()) - 1)

    x = torch.bernoulli(torch.full((40, 4), 0.5, device=device))
    history = probae.fit(
        VAE((4,), 2, hidden=(8,)).to(device), x, epochs=3, batch_size=20, progress=False,
        callbacks=[callbacks.CSVLogger(path), Count()],
    )  # fmt: skip
    assert seen == [1, 2, 3]
    rows = list(csv.DictReader(path.open()))
    assert [float(r["train_loss"]) for r in rows] == pytest.approx(history.train_loss)


def test_image_files_in_every_layout_get_the_same_pictures(tmp_path, device):
    images = (torch.rand(120, 1, 8, 8) > 0.5).to(torch.uint8) * 255
    layouts = {
        "nchw": images.numpy(),
        "nhwc": images.permute(0, 2, 3, 1).numpy(),
        "nhw": images[:, 0].numpy(),
    }
    loaded = {}
    for name, array in layouts.items():
        np.save(tmp_path / f"{name}.npy", array)
        loaded[name] = data.from_file(tmp_path / f"{name}.npy", "test")
        assert loaded[name].image_shape == (1, 8, 8)
        assert torch.equal(loaded[name].x, loaded["nchw"].x)
    # three colour channels last come back first, in the same places
    colour = torch.randint(0, 256, (30, 5, 6, 3), dtype=torch.uint8)
    np.save(tmp_path / "colour.npy", colour.numpy())
    both = data.from_file(tmp_path / "colour.npy", "train")
    assert both.image_shape == (3, 5, 6)
    kept = torch.as_tensor(data.files._held_out_split(30, "train"), dtype=torch.long)
    assert torch.equal(both.x.reshape(-1, 3, 5, 6), colour[kept].permute(0, 3, 1, 2) / 255.0)
    run = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "nhwc.npy"), "--run-dir", str(run), "--epochs", "1"]
    assert cli.main(args + TINY + _device_args(device)) == 0
    for picture in ("samples.png", "reconstructions.png", "history.png"):
        assert (run / picture).is_file()


def test_the_demo_folder_is_ignored_by_git():
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert "probae-demo/" in ignored


def test_the_command_line_page_lists_every_family_once():
    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.rst").read_text()
    table = text[text.index("Model families") : text.index("The VAE and the CVAE default")]
    listed = re.findall(r"^   \* - ``([a-z][a-z-]*)``$", table, flags=re.M)
    assert sorted(listed) == sorted(set(listed)) == sorted(families.FAMILIES)
