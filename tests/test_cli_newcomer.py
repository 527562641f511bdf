"""The command line as a newcomer meets it: missing optional packages, option lists and
messages, the files a run leaves, pictures for every kind of image data."""

import sys

import pytest

from probae import callbacks, cli


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
