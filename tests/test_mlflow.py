"""callbacks.MLflow against a real local MLflow store: parameters, per-epoch metrics,
the saved model and the pictures, read back with MLflow's own client."""

import sys

import pytest
import torch

import probae
from probae import VAE, callbacks, data


@pytest.fixture
def store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    # unset during the test (as on a fresh machine), restored afterwards
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    return f"file:{tmp_path / 'mlruns'}"


def test_a_run_is_logged_to_a_local_store(device, tmp_path, store):
    from mlflow.tracking import MlflowClient

    train = data.binarize(data.load("digits", "train")[:64], seed=0)
    test = data.binarize(data.load("digits", "test")[:32], seed=1)
    vae = VAE((64,), 2, hidden=(16,)).to(device)
    logger = callbacks.MLflow(store, experiment="digits", params={"note": "small"})
    history = probae.fit(
        vae, train, epochs=3, batch_size=32, validation=test, callbacks=[logger], progress=False
    )
    client = MlflowClient(store)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "digits"
    params = run.data.params
    assert params["model"] == "VAE" and params["model.z_dim"] == "2"
    assert params["epochs"] == "3" and params["steps_per_epoch"] == "2"
    assert params["note"] == "small" and float(params["lr"]) == pytest.approx(1e-3)
    for key in ("train_loss", "val_loss", "rate", "distortion"):
        logged = sorted(client.get_metric_history(logger.run_id, key), key=lambda m: m.step)
        assert [m.step for m in logged] == [1, 2, 3]
        assert [m.value for m in logged] == pytest.approx(getattr(history, key))
    kl0 = client.get_metric_history(logger.run_id, "kl_per_dim.0")
    assert len(kl0) == 3
    # the model comes back from the store with the trained weights
    where = client.download_artifacts(logger.run_id, "model", str(tmp_path / "back"))
    loaded = probae.load(where, device="cpu")
    for key, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.cpu())
    pictures = {a.path for a in client.list_artifacts(logger.run_id, "pictures")}
    assert pictures == {
        f"pictures/{name}.png"
        for name in ("history", "rate_distortion", "kl_per_dimension", "samples")
    }


def test_a_pair_of_functions_logs_metrics_without_a_model(tmp_path, store):
    from mlflow.tracking import MlflowClient

    from examples.custom_model_guide import make_pair

    train = data.binarize(data.load("digits", "train")[:64], seed=0)
    model, guide, _, _ = make_pair(64, z_dim=2, hidden=16)
    logger = callbacks.MLflow(store)
    probae.fit((model, guide), train, epochs=2, batch_size=32, progress=False, callbacks=[logger])
    client = MlflowClient(store)
    assert len(client.get_metric_history(logger.run_id, "train_loss")) == 2
    assert [a.path for a in client.list_artifacts(logger.run_id)] == ["pictures"]


def test_mlflow_missing_or_bad_options_are_refused(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="tracking_uri"):
        pytest.importorskip("mlflow")
        callbacks.MLflow("")
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r"pip install 'probae\[mlflow\]'"):
        callbacks.MLflow(f"file:{tmp_path / 'mlruns'}")
    assert not (tmp_path / "mlruns").exists()


class _Diverges(callbacks.Callback):
    """Spoils the weights after ``epoch`` epochs, so the next step's loss is not finite."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            with torch.no_grad():
                for p in state.module.parameters():
                    p.fill_(float("nan"))


class _Interrupts(callbacks.Callback):
    def on_step_end(self, state, loss, terms, size):
        if state.step == 3:
            raise KeyboardInterrupt


def test_a_run_that_raises_is_marked_failed_not_left_running(device, tmp_path, store):
    from mlflow.tracking import MlflowClient

    train = data.binarize(data.load("digits", "train")[:64], seed=0)
    vae = VAE((64,), 2, hidden=(16,)).to(device)
    logger = callbacks.MLflow(store)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        probae.fit(
            vae, train, epochs=4, batch_size=32, callbacks=[logger, _Diverges(2)], progress=False
        )
    client = MlflowClient(store)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FAILED"
    # the epochs finished before the failure are kept; no model or pictures are logged
    logged = sorted(client.get_metric_history(logger.run_id, "train_loss"), key=lambda m: m.step)
    assert [m.step for m in logged] == [1, 2]
    assert client.list_artifacts(logger.run_id) == []

    # an interrupt ends the run as KILLED; the same logger opens a new run each time
    failed = logger.run_id
    vae = VAE((64,), 2, hidden=(16,)).to(device)
    with pytest.raises(KeyboardInterrupt):
        probae.fit(
            vae, train, epochs=4, batch_size=32, callbacks=[logger, _Interrupts()], progress=False
        )
    assert logger.run_id != failed
    assert client.get_run(logger.run_id).info.status == "KILLED"
    assert client.get_run(failed).info.status == "FAILED"
