"""The command line when things go wrong: every anticipated failure is one line on
stderr and a non-zero status, figures computed before it are printed first, and a run
directory is never silently replaced or shared."""

import json
import os
import shutil
import signal

import pytest
import torch

from probae import VAE, cli, rundir, saving
from probae.saving import CHECKPOINT_NAME, read_checkpoint

TINY = ["--z-dim", "2", "--hidden", "8", "--threads", "1", "--no-progress"]


def _run(argv, capsys):
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip().splitlines()


def _one_line(status, err, *words):
    assert status != 0
    assert len(err) == 1 and err[0].startswith("probae "), err
    for word in words:
        assert word in err[0], err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["train", "--run-dir", str(run), "--epochs", "1", *TINY]) == 0
    return run


def _copy(trained, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    (run / rundir.LOCK_NAME).unlink(missing_ok=True)
    return run


def test_an_unavailable_device_is_one_line(tmp_path, capsys):
    status, _, err = _run(
        ["train", "--run-dir", str(tmp_path / "r"), "--device", "mps", *TINY], capsys
    )
    _one_line(status, err, "--device mps")
    assert not (tmp_path / "r").exists()


def test_evaluate_prints_its_figures_before_a_failure_to_write_them(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    (run / "metrics.json").mkdir()  # a folder where the file should go
    (run / "metrics.json" / "keep").write_text("")
    status, out, err = _run(["evaluate", str(run), "--num-samples", "5", "--threads", "1"], capsys)
    _one_line(status, err, "metrics.json")
    assert "ELBO" in out and "log-likelihood" in out


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda run: (run / "config.json").write_text("[1, 2]"), ["config.json", "JSON object"]),
        (lambda run: (run / "config.json").write_text("{not json"), ["config.json", "JSON"]),
        (lambda run: (run / CHECKPOINT_NAME).write_bytes(b"junk"), ["corrupt"]),
        (
            lambda run: saving.write_checkpoint(
                {"model": None, "module": VAE((64,), 5, hidden=(8,)).state_dict()},
                run / CHECKPOINT_NAME,
            ),
            ["do not fit"],
        ),
        (
            lambda run: _rewrite_checkpoint(run, lambda s: s["module"].pop("encoder.net.0.bias")),
            ["do not fit"],
        ),
    ],
    ids=["list", "not-json", "junk", "other-size", "missing-key"],
)
def test_damaged_run_directories_are_one_line_errors(trained, tmp_path, capsys, damage, words):
    run = _copy(trained, tmp_path)
    damage(run)
    for command in (["evaluate", str(run), "--num-samples", "2"], ["sample", str(run)]):
        status, _, err = _run(command, capsys)
        _one_line(status, err, *words)


def _rewrite_checkpoint(run, change):
    state = read_checkpoint(run / CHECKPOINT_NAME)
    change(state)
    state.pop("checksum")
    saving.write_checkpoint(state, run / CHECKPOINT_NAME)


def test_a_config_without_x_shape_is_one_line(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    config = json.loads((run / "config.json").read_text())
    del config["x_shape"]
    (run / "config.json").write_text(json.dumps(config))
    _rewrite_checkpoint(run, lambda s: s.update(model=None))  # as probae 0.1.0 wrote it
    status, _, err = _run(["evaluate", str(run), "--num-samples", "2"], capsys)
    _one_line(status, err, "config.json", "x_shape")


def test_a_run_directory_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    status, _, err = _run(["train", "--run-dir", str(tmp_path / "file" / "run"), *TINY], capsys)
    _one_line(status, err, "file")


def test_a_second_writer_is_refused_naming_the_first(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child holding the run, as a training process would
        try:
            with rundir.lock(run):
                os.write(ready_w, b"x")
                signal.pause()
        finally:
            os._exit(0)
    try:
        os.read(ready_r, 1)
        status, _, err = _run(
            ["train", "--run-dir", str(run), "--resume", "--epochs", "2", *TINY[4:]], capsys
        )
        _one_line(status, err, f"process {pid}")
        assert read_checkpoint(run / CHECKPOINT_NAME)["epoch"] == 1
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    # the lock died with its holder: the run continues
    status, out, _ = _run(
        ["train", "--run-dir", str(run), "--resume", "--epochs", "2", *TINY[4:]], capsys
    )
    assert status == 0 and "resuming" in out


def test_resume_with_a_lower_learning_rate(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    status, out, err = _run(
        ["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--lr", "1e-4", *TINY[4:]],
        capsys,
    )
    assert status == 0, err
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-4
    assert read_checkpoint(run / CHECKPOINT_NAME)["optimizer"]["param_groups"][0]["lr"] == 1e-4
    status, _, err = _run(
        ["train", "--run-dir", str(run), "--resume", "--epochs", "3", "--batch-size", "7"], capsys
    )
    _one_line(status, err, "--batch-size")


def test_resume_of_a_run_stopped_before_its_first_epoch_keeps_its_options(
    trained, tmp_path, capsys
):
    run = tmp_path / "unstarted"
    run.mkdir()
    config = json.loads((trained / "config.json").read_text())
    config["z_dim"] = 3
    (run / "config.json").write_text(json.dumps(config))
    status, out, err = _run(
        ["train", "--run-dir", str(run), "--resume", "--epochs", "1", "--no-progress"], capsys
    )
    assert status == 0, err
    assert "starting it over with its options" in out
    assert json.loads((run / "config.json").read_text())["z_dim"] == 3
    assert read_checkpoint(run / CHECKPOINT_NAME)["model"]["options"]["z_dim"] == 3


def test_ctrl_c_before_the_first_epoch_says_nothing_is_saved(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.train, "fit", interrupted)
    status, _, err = _run(["train", "--run-dir", str(tmp_path / "r"), *TINY], capsys)
    assert status == 130
    _one_line(status, err, "nothing is saved", "--resume")


def test_ctrl_c_while_drawing_reports_the_training_done(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.train, "_pictures", interrupted)
    status, _, err = _run(
        ["train", "--run-dir", str(tmp_path / "r"), "--epochs", "1", *TINY], capsys
    )
    assert status == 130
    _one_line(status, err, "trained vae for 1 epochs", CHECKPOINT_NAME, "interrupted")
    assert read_checkpoint(tmp_path / "r" / CHECKPOINT_NAME)["epoch"] == 1


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_a_diverged_run_names_its_last_good_checkpoint_and_resumes_at_a_lower_lr(
    trained, tmp_path, capsys
):
    run = _copy(trained, tmp_path)
    # the weights a run at lr=1e10 leaves: finite, and useless
    _rewrite_checkpoint(
        run, lambda s: s["module"].update({k: v * 1e30 for k, v in s["module"].items()})
    )
    status, _, err = _run(
        ["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--no-progress"], capsys
    )
    _one_line(status, err, "non-finite", "checkpoint.pt' (epoch 1)")
    assert status == 1
    named = err[0].split("last good checkpoint is '")[1].split("'")[0]
    assert read_checkpoint(named)["epoch"] == 1
    assert torch.isfinite(read_checkpoint(named)["module"]["encoder.net.0.weight"]).all()
