"""Nothing is lost: saves refuse what they did not write, a save is one unit of two
files that load checks against each other, and a full disk is one clear error that
leaves the previous save or checkpoint as it was."""

from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys

import pytest
import torch

import probae
from probae import VAE, cli, data, rundir, saving
from probae.saving import CHECKPOINT_NAME, MODEL_CONFIG_NAME, MODEL_NAME

D = 6
TINY = ["--z-dim", "2", "--hidden", "8", "--threads", "1", "--no-progress"]


def _model(z_dim=3, seed=0):
    torch.manual_seed(seed)
    return VAE((D,), z_dim, hidden=(8,))


def _equal_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def _files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class _FullDisk:
    """A file that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, handle, room):
        self.handle, self.room = handle, room

    def write(self, data):
        data = bytes(data)
        if len(data) > self.room:
            self.handle.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


def _fill_disk(monkeypatch, room=100):
    real = builtins.open

    def opener(file, mode="r", *args, **kwargs):
        handle = real(file, mode, *args, **kwargs)
        return _FullDisk(handle, room) if "w" in mode else handle

    monkeypatch.setattr(saving, "open", opener, raising=False)


# -- refusing what was not written here ----------------------------------------------


def test_save_refuses_a_folder_holding_another_model_unless_overwrite(tmp_path):
    first, second = _model(seed=0), _model(seed=1)
    probae.save(first, tmp_path / "m")
    before = _files(tmp_path / "m")
    with pytest.raises(FileExistsError, match="already holds a saved model.*overwrite=True"):
        probae.save(second, tmp_path / "m")
    assert _files(tmp_path / "m") == before
    assert _equal_weights(probae.load(tmp_path / "m"), first)
    probae.save(second, tmp_path / "m", overwrite=True)
    assert _equal_weights(probae.load(tmp_path / "m"), second)
    with pytest.raises(TypeError, match="overwrite"):
        probae.save(second, tmp_path / "m", overwrite="yes")


def test_save_refuses_a_run_directory_and_load_refuses_a_folder_holding_both(tmp_path):
    x = torch.rand(20, D).round()
    vae = _model()
    probae.fit(vae, x, epochs=1, batch_size=10, checkpoint_dir=tmp_path / "run", progress=False)
    before = _files(tmp_path / "run")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="training run's folder"):
            probae.save(_model(seed=3), tmp_path / "run", overwrite=overwrite)
    assert _files(tmp_path / "run") == before
    # a folder holding both (written by hand, or by an older probae) is ambiguous
    probae.save(_model(seed=3), tmp_path / "saved")
    (tmp_path / "run" / MODEL_NAME).write_bytes((tmp_path / "saved" / MODEL_NAME).read_bytes())
    with pytest.raises(ValueError, match="both a saved model.*and a training run"):
        probae.load(tmp_path / "run")
    assert _equal_weights(probae.load(tmp_path / "run" / CHECKPOINT_NAME), vae)


# -- one save, two files -------------------------------------------------------------


def test_a_save_interrupted_between_its_two_files_is_named_on_load(tmp_path, monkeypatch):
    probae.save(_model(seed=0), tmp_path / "m")
    calls = []
    real = saving.os.replace

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process stopped between the two renames
        return real(src, dst)

    monkeypatch.setattr(saving.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        probae.save(_model(seed=1), tmp_path / "m", overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [MODEL_CONFIG_NAME, MODEL_NAME]
    with pytest.raises(ValueError, match=r"model\.json is from an earlier save than model\.pt"):
        probae.load(tmp_path / "m")


def test_a_weights_file_of_another_save_and_an_edited_model_json_are_named(tmp_path):
    probae.save(_model(seed=0), tmp_path / "a")
    probae.save(_model(seed=1), tmp_path / "b")
    newer = (tmp_path / "b" / MODEL_NAME).read_bytes()
    (tmp_path / "a" / MODEL_NAME).write_bytes(newer)  # a's model.json, b's weights
    with pytest.raises(ValueError, match=r"model\.json is from an earlier save"):
        probae.load(tmp_path / "a")
    probae.save(_model(seed=2), tmp_path / "c")
    (tmp_path / "c" / MODEL_NAME).write_bytes((tmp_path / "a" / MODEL_NAME).read_bytes())
    # c's model.json is newer than the weights put beside it
    with pytest.raises(ValueError, match=r"model\.pt is from an earlier save"):
        probae.load(tmp_path / "c")
    # a hand edit of the options is named, even without the save record
    probae.save(_model(z_dim=3), tmp_path / "d")
    manifest = json.loads((tmp_path / "d" / MODEL_CONFIG_NAME).read_text())
    manifest["model"]["options"]["z_dim"] = 5
    (tmp_path / "d" / MODEL_CONFIG_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"z_dim is 5.*wrong file is model\.json"):
        probae.load(tmp_path / "d")
    del manifest["weights"]
    (tmp_path / "d" / MODEL_CONFIG_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"z_dim is 5"):
        probae.load(tmp_path / "d")
    # the weights file alone (a copy without its model.json) still loads
    (tmp_path / "d" / MODEL_CONFIG_NAME).unlink()
    assert probae.load(tmp_path / "d").z_dim == 3


# -- full disks ----------------------------------------------------------------------


def test_a_full_disk_during_save_is_one_error_and_the_previous_save_is_unchanged(
    tmp_path, monkeypatch
):
    first = _model(seed=0)
    probae.save(first, tmp_path / "m")
    before = _files(tmp_path / "m")
    for room in (0, 100, 2000):  # inside model.pt, or at model.json
        _fill_disk(monkeypatch, room)
        with pytest.raises(OSError) as caught:
            probae.save(_model(seed=1), tmp_path / "m", overwrite=True)
        monkeypatch.undo()
        assert caught.value.errno == errno.ENOSPC
        message = str(caught.value)
        assert len(message.splitlines()) == 1 and "No space left" in message
        assert "inline_container" not in message and str(tmp_path / "m") in message
        assert _files(tmp_path / "m") == before  # no temporary file left either
        assert _equal_weights(probae.load(tmp_path / "m"), first)


def test_a_full_disk_during_fit_is_one_error_the_checkpoint_survives_and_nothing_is_left(
    tmp_path, monkeypatch
):
    x = data.load("digits", "train").x[:64]
    run = tmp_path / "run"
    kwargs = {"batch_size": 32, "binarize": "static", "seed": 1, "progress": False}
    probae.fit(VAE((64,), 2, hidden=(8,)), x, epochs=1, checkpoint_dir=run, **kwargs)
    before = _files(run)
    _fill_disk(monkeypatch, 1000)
    with pytest.raises(OSError) as caught:
        probae.fit(
            VAE((64,), 2, hidden=(8,)), x, epochs=2, checkpoint_dir=run, resume=True, **kwargs
        )
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert "inline_container" not in str(caught.value) and CHECKPOINT_NAME in str(caught.value)
    assert _files(run) == before  # the checkpoint as it was; no temporary file, no lock
    assert rundir.LOCK_NAME not in before
    assert saving.read_checkpoint(run / CHECKPOINT_NAME)["epoch"] == 1


def test_a_full_disk_in_probae_train_is_one_line(tmp_path, monkeypatch, capsys):
    _fill_disk(monkeypatch, 1000)
    status = cli.main(["train", "--run-dir", str(tmp_path / "run"), "--epochs", "1", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and len(err) == 1, err
    assert "No space left" in err[0] and "inline_container" not in err[0]


def test_orphan_temporary_files_of_killed_writers_are_removed_at_the_next_start(tmp_path):
    x = torch.rand(20, D).round()
    run = tmp_path / "run"
    probae.fit(_model(), x, epochs=1, batch_size=10, checkpoint_dir=run, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = run / f".{CHECKPOINT_NAME}.{dead.pid}.0123abcd.tmp"
    orphan.write_bytes(b"half a checkpoint")
    alive = run / f".{CHECKPOINT_NAME}.{os.getppid()}.0123abcd.tmp"  # a live writer's
    alive.write_bytes(b"being written")
    unrelated = run / "notes.tmp"
    unrelated.write_text("mine")
    probae.fit(
        _model(), x, epochs=2, batch_size=10, checkpoint_dir=run, resume=True, progress=False
    )
    assert not orphan.exists() and alive.exists() and unrelated.exists()
    assert not (run / rundir.LOCK_NAME).exists()


# -- the command line ----------------------------------------------------------------


def test_demo_refuses_a_training_run_and_replaces_only_its_own(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), "--epochs", "1", *TINY]) == 0
    before = _files(run)
    capsys.readouterr()
    status = cli.main(["demo", "--run-dir", str(run), "--epochs", "1", "--num-samples", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and len(err) == 1 and "--overwrite" in err[0], err
    assert _files(run) == before
    # a folder an earlier demo wrote is the demo's to replace; an empty one too
    cli._check_demo_folder(tmp_path, overwrite=True)
    (tmp_path / "demo").mkdir()
    cli._check_demo_folder(tmp_path / "demo", overwrite=False)
    (tmp_path / "demo" / "history.csv").write_text("x")
    with pytest.raises(cli.CommandError, match="did not write"):
        cli._check_demo_folder(tmp_path / "demo", overwrite=False)
    (tmp_path / "demo" / cli.DEMO_MARK).touch()
    cli._check_demo_folder(tmp_path / "demo", overwrite=False)


def test_sample_refuses_an_out_that_is_a_folder_or_not_a_png(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), "--epochs", "1", *TINY]) == 0
    (tmp_path / "pictures").mkdir()
    for out in (tmp_path / "pictures", tmp_path / "grid"):
        capsys.readouterr()
        status = cli.main(["sample", str(run), "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert status != 0 and len(err) == 1 and ".png" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pictures", "run"]
    assert list((tmp_path / "pictures").iterdir()) == []
