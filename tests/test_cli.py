"""The command line: demo end to end, a run directory through train, evaluate and
sample, resuming, and one-line errors."""

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch

import probae
from probae import cli
from probae.models import families
from probae.saving import read_checkpoint as load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"(-?\d+\.\d+) ± (\d+\.\d+)"
TINY = ["--z-dim", "2", "--hidden", "32", "--threads", "1", "--no-progress"]


def _figures(text):
    """(ELBO, log-likelihood) printed by evaluate or demo."""
    elbo = re.search(r"ELBO:\s+" + NUMBER, text)
    ll = re.search(r"log-likelihood:\s+" + NUMBER, text)
    assert elbo and ll, text
    return float(elbo.group(1)), float(ll.group(1))


def _png(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 50
    return image


def _history(run_dir):
    with open(run_dir / "history.csv") as handle:
        return list(csv.DictReader(handle))


def test_demo_runs_end_to_end_in_process(tmp_path, capsys, device):
    threads = torch.get_num_threads()
    run = tmp_path / "demo"
    status = cli.main(
        ["demo", "--run-dir", str(run), "--epochs", "2", "--num-samples", "20"]
        + ["--device", str(device), "--no-progress"]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert torch.get_num_threads() == threads  # the demo's --threads 1 is undone
    for name in ("samples.png", "reconstructions.png"):
        _png(run / name)
    elbo, ll = _figures(out)
    assert "nats per image" in out and "(360 images)" in out
    # Bernoulli pixels: p(x) <= 1, and the IWAE bound (K = 20) lies above the ELBO
    assert elbo < ll < 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["points"] == 360 and metrics["num_samples"] == 20
    assert round(metrics["elbo"], 3) == elbo and round(metrics["log_likelihood"], 3) == ll


def test_demo_runs_as_a_program(tmp_path, device):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # keeps an emulator
    env = {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "probae", "demo", "--epochs", "1", "--num-samples", "10"]
        + ["--run-dir", str(tmp_path / "demo"), "--device", str(device), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    elbo, ll = _figures(result.stdout)
    assert elbo < ll < 0
    assert (tmp_path / "demo" / "samples.png").is_file()


def test_train_evaluate_sample_through_a_run_directory(tmp_path, capsys, device):
    run = tmp_path / "run"
    dev = ["--device", str(device)]
    assert cli.main(["train", "--run-dir", str(run), "--epochs", "2", *TINY, *dev]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["z_dim"] == 2 and config["hidden"] == [32] and config["x_shape"] == [64]
    assert config["binarize"] == "dynamic"  # auto, for Bernoulli pixels
    assert [row["epoch"] for row in _history(run)] == ["1", "2"]
    for name in ("samples.png", "reconstructions.png", "latent.png", "history.png"):
        _png(run / name)

    # the run directory alone rebuilds the trained model
    model = probae.load(run, device=device)
    saved = load_checkpoint(run / "checkpoint.pt", map_location="cpu")["module"]
    assert saved.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), saved[key].cpu())

    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--num-samples", "50", *dev]) == 0
    elbo, ll = _figures(capsys.readouterr().out)
    assert elbo < ll < 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 50

    out = tmp_path / "grid.png"
    assert cli.main(["sample", str(run), "-n", "9", "--out", str(out), *dev]) == 0
    _png(out)


def test_resume_continues_the_run(tmp_path, capsys, device):
    dev = ["--device", str(device)]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli.main(["train", "--run-dir", str(whole), "--epochs", "2", *TINY, *dev]) == 0
    assert cli.main(["train", "--run-dir", str(split), "--epochs", "1", *TINY, *dev]) == 0
    # the stored options are used: only --epochs is given
    assert cli.main(["train", "--run-dir", str(split), "--resume", "--epochs", "2", *dev]) == 0
    assert "resuming" in capsys.readouterr().out
    rows = _history(split)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert json.loads((split / "config.json").read_text())["epochs"] == 2
    if device.type == "cpu":  # bitwise reproduction is a CPU promise
        assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in _history(whole)]


def _one_line_error(argv, capsys, *needles):
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_unknown_names_are_one_line_errors(tmp_path, capsys):
    run = ["--run-dir", str(tmp_path / "r"), "--epochs", "1", "--no-progress"]
    _one_line_error(["train", "--data", "cifar", *run], capsys, "cifar", "digits")
    _one_line_error(["train", "--prior", "cauchy", *run], capsys, "cauchy", "standard-normal")
    _one_line_error(["train", "--likelihood", "poisson", *run], capsys, "poisson", "bernoulli")
    _one_line_error(["train", "--model", "gan", *run], capsys, "gan", "vae")
    _one_line_error(["train", "--components", "3", *run], capsys, "--components")
    _one_line_error(["train", "--data", "mnist", *run], capsys, "--root")
    _one_line_error(["train", "--data", "moons", *run], capsys, "[0, 1]", "gaussian")
    _one_line_error(["evaluate", str(tmp_path / "nowhere")], capsys, "config.json")
    _one_line_error(
        ["train", "--epochs", "0", "--run-dir", str(tmp_path / "z")], capsys, "--epochs"
    )
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_a_finished_run_is_not_overwritten_and_resume_keeps_its_options(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), "--epochs", "1", *TINY]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    _one_line_error(["train", "--run-dir", str(run), "--epochs", "1", *TINY], capsys, "--resume")
    _one_line_error(
        ["train", "--run-dir", str(run), "--resume", "--z-dim", "4"], capsys, "--z-dim", "z_dim=2"
    )
    _one_line_error(
        ["train", "--run-dir", str(run), "--resume", "--epochs", "0"], capsys, "--epochs"
    )
    assert (run / "checkpoint.pt").read_bytes() == before


def test_every_option_is_explained():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"train", "evaluate", "sample", "demo"}
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help and len(action.help) > 10, (name, action.option_strings)
        with pytest.raises(SystemExit) as exit_:
            cli.main([name, "--help"])
        assert exit_.value.code == 0


# -- every family through a run directory -----------------------------------------------

#: per family: options given to train, and what config.json must then record (the
#: options given and the defaults the constructor resolved from them)
FAMILY_RUNS = {
    "ae": (["--hidden", "32"], {"hidden": [32], "likelihood": "gaussian", "binarize": "none"}),
    "denoising-ae": (
        ["--hidden", "32", "--corruption", "salt-and-pepper"],
        {"corruption": "salt-and-pepper", "noise": 0.25},
    ),
    "sparse-ae": (
        ["--hidden", "32", "--penalty", "kl"],
        {"penalty": "kl", "weight": 3.0, "rho": 0.05},
    ),
    "ksparse-ae": (["--z-dim", "16", "--k", "4"], {"z_dim": 16, "k": 4, "hidden": []}),
    "contractive-ae": (["--weight", "0.5"], {"weight": 0.5, "hidden": []}),
    "cvae": (
        ["--z-dim", "2", "--hidden", "32"],
        {"c_shape": [10], "likelihood": "bernoulli", "binarize": "dynamic"},
    ),
}


def _objective(text):
    found = re.search(r"objective:\s+" + NUMBER, text)
    assert found, text
    return float(found.group(1))


def _gaussian_reconstruction_log_density(model, x):
    """log N(x; g(f(x)), I) of each point: the AE's whole objective under a flat prior."""
    residual = x - model.reconstruct(x)
    return -0.5 * residual.pow(2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)


@pytest.mark.parametrize("name", list(FAMILY_RUNS))
def test_every_family_trains_evaluates_and_samples(name, tmp_path, capsys, device):
    options, recorded = FAMILY_RUNS[name]
    run, dev = tmp_path / "run", ["--device", str(device)]
    train = ["train", "--model", name, "--run-dir", str(run), "--epochs", "1", *options]
    assert cli.main([*train, "--threads", "1", "--no-progress", *dev]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == name
    for key, value in recorded.items():
        assert config[key] == value, key
    deterministic = families.FAMILIES[name].deterministic
    # a deterministic autoencoder has no prior to draw samples.png from: filters instead
    pictures = ["filters.png"] if deterministic else ["samples.png"]
    for picture in ["reconstructions.png", "latent.png", *pictures]:
        _png(run / picture)
    assert (run / "samples.png").exists() != deterministic

    # the run directory alone rebuilds the exact model, weights bit for bit
    model = probae.load(run, device=device)
    assert type(model) is families.FAMILIES[name].cls
    saved = load_checkpoint(run / "checkpoint.pt", map_location="cpu")["module"]
    assert saved.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), saved[key].cpu())

    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--num-samples", "30", *dev]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    if deterministic:
        assert "log-likelihood: not available" in out and "log_likelihood" not in metrics
        objective = _objective(out)
        assert round(metrics["objective"], 3) == objective
        if name == "ae":  # flat prior, Gaussian pixels of scale 1: nothing but log N(x; r(x), I)
            test = cli._load_data(config, "test").x.to(device)
            expected = _gaussian_reconstruction_log_density(model, test).mean().item()
            assert objective == pytest.approx(expected, abs=2e-3)
    else:
        assert "conditional ELBO" in out and "log p(x|c)" in out
        elbo, ll = _figures(out)
        # Bernoulli pixels: p(x|c) <= 1, and the IWAE bound (K = 30) lies above the ELBO
        assert elbo < ll < 0
        assert metrics["condition"] == "label" and metrics["num_samples"] == 30

    grid = tmp_path / "grid.png"
    assert cli.main(["sample", str(run), "-n", "4", "--out", str(grid), *dev]) == 0
    out = capsys.readouterr().out
    image = _png(grid)
    if deterministic:
        assert "fitted a 10-component Gaussian mixture to the codes of its 1437" in out
    else:  # one row of 4 samples per class: ten rows, far taller than wide
        assert image.shape[0] > 1.5 * image.shape[1]


def test_an_option_another_family_takes_is_a_one_line_error(tmp_path, capsys):
    run = ["--run-dir", str(tmp_path / "r"), "--epochs", "1", "--no-progress"]
    _one_line_error(["train", "--k", "3", *run], capsys, "--k", "--model vae", "ksparse-ae")
    _one_line_error(["train", "--model", "ae", "--beta", "2", *run], capsys, "--beta", "vae, cvae")
    _one_line_error(["train", "--model", "cvae", "--prior", "gmm", *run], capsys, "--prior")
    _one_line_error(["train", "--model", "ksparse-ae", "--weight", "1", *run], capsys, "--weight")
    _one_line_error(["train", "--model", "sparse-ae", "--rho", "0.1", *run], capsys, "--rho", "kl")
    _one_line_error(
        ["train", "--model", "denoising-ae", "--noise", "2", *run], capsys, "--noise", "masking"
    )
    _one_line_error(["train", "--model", "ksparse-ae", "--k", "40", *run], capsys, "k", "z_dim=32")
    assert not (tmp_path / "r").exists()


def test_sample_refuses_code_components_for_a_model_with_a_prior(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), "--epochs", "1", *TINY]) == 0
    _one_line_error(["sample", str(run), "--components", "3"], capsys, "--components", "vae")


@pytest.mark.parametrize("name", list(families.FAMILIES))
def test_command_line_defaults_are_the_constructors(name):
    """With no options, every family is built exactly as its class builds it."""
    family, x_shape = families.FAMILIES[name], (64,)
    config = {"model": name, "c_shape": [10]} if family.conditional else {"model": name}
    z_dim = family.options.get("z_dim")  # the stacked-dae's is the top of its layers
    args = (x_shape, (10,), z_dim) if family.conditional else (x_shape, z_dim)
    args = args if z_dim is not None else (x_shape,)
    built, direct = families.build(config, x_shape), family.cls(*args)
    assert repr(built) == repr(direct)
    shapes = {k: v.shape for k, v in direct.state_dict().items()}
    assert {k: v.shape for k, v in built.state_dict().items()} == shapes


def test_train_reads_a_npy_file_and_logs_to_tensorboard(tmp_path, device):
    pytest.importorskip("tensorboard")
    images = (torch.rand(120, 1, 8, 8) > 0.5).to(torch.uint8) * 255
    import numpy as np

    np.save(tmp_path / "pixels.npy", images.numpy())
    run = tmp_path / "run"
    status = cli.main(
        ["train", "--data", str(tmp_path / "pixels.npy"), "--run-dir", str(run)]
        + ["--epochs", "2", "--z-dim", "2", "--hidden", "16", "--tensorboard"]
        + ["--device", str(device), "--no-progress"]
    )
    assert status == 0
    rows = _history(run)
    assert len(rows) == 2
    for row in rows:  # the terms of the loss add up to it
        total = float(row["distortion"]) + float(row["rate"]) + float(row["penalty"])
        assert total == pytest.approx(float(row["train_loss"]), rel=1e-5)
    for name in ("rate_distortion.png", "kl_per_dimension.png", "history.png"):
        _png(run / name)
    assert any((run / "tensorboard").iterdir())
    assert json.loads((run / "config.json").read_text())["x_shape"] == [64]


def test_capacity_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "cap"
    argv = ["train", "--run-dir", str(run), "--epochs", "1", *TINY, "--capacity", "2,40,10"]
    assert cli.main(argv) == 0
    assert json.loads((run / "config.json").read_text())["capacity"] == [2.0, 40, 10.0]
    with pytest.raises(SystemExit):
        cli.main(["train", "--run-dir", str(tmp_path / "bad"), "--capacity", "2"])
    assert "--capacity must be C,STEPS" in capsys.readouterr().err
