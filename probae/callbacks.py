"""Callbacks: what :func:`probae.fit` does around its steps, as objects a user can add,
remove or write.

The loop calls, on every callback in order::

    on_train_begin(state)
    on_epoch_begin(state)
    on_step_begin(state)                     # per step, before it
    on_step_end(state, loss, terms, size)   # per step
    on_epoch_end(state)                      # state.history has the epoch's row
    on_train_end(state)

and, instead of the rest, ``on_exception(state, error)`` on every callback when
training raises once it has begun (an error, a non-finite loss, an interrupt): a
callback closes what it opened there (:class:`MLflow` marks its run ``FAILED``, or
``KILLED`` on an interrupt). The error is raised again once every callback is told.

``loss`` is the batch's summed loss (a float, already read for the finite-loss
check), ``size`` its number of points, and ``terms`` a dict of 0-d tensors, the
batch's summed ``"distortion"``, ``"rate"`` and ``"penalty"`` (see
:mod:`probae.terms`), or None. Reading a term (``float(terms["rate"])``) waits for
the device: callbacks that run every step should keep them as tensors.

``state`` is a :class:`TrainingState`. A callback ends training after the
current epoch by setting ``state.stop = True``.

:func:`probae.fit` itself uses :class:`HistoryRecorder` (always),
:class:`EarlyStopping` (``early_stopping=``), :class:`Checkpoint`
(``checkpoint_dir=``) and :class:`ProgressBar` (``progress=``);
:class:`TensorBoard` and :class:`MLflow` are added by the user.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import _progress, distributed

__all__ = [
    "Callback",
    "TrainingState",
    "HistoryRecorder",
    "ProgressBar",
    "Checkpoint",
    "EarlyStopping",
    "TensorBoard",
    "CSVLogger",
    "MLflow",
    "BEST_NAME",
]

BEST_NAME = "best.pt"


@dataclass
class TrainingState:
    """What callbacks see of a training run.

    :ivar module: the model being trained (a :class:`torch.nn.Module`, or None for a
        pair of plain functions).
    :ivar optimizer: the PyTorch optimizer.
    :ivar history: the run's :class:`probae.History`.
    :ivar int epoch: epochs done (the current epoch's number during it, from 1).
    :ivar int step: optimizer steps done.
    :ivar int epochs: the run's total epochs.
    :ivar int steps_per_epoch: steps in one epoch.
    :ivar validation: the epoch's validation summary (a dict) or None.
    :ivar bool stop: set by a callback to end training after this epoch.
    :ivar bool is_writer: this process writes files (rank 0).
    :ivar checkpoint_dir: the run's checkpoint folder or None.
    """

    module: object
    optimizer: object
    history: object
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0
    validation: dict | None = None
    stop: bool = False
    is_writer: bool = True
    checkpoint_dir: object = None
    write_checkpoint: object = None  # path -> None, provided by the loop
    state_dict: object = None  # () -> trained weights (module and param store)
    load_state_dict: object = None  # weights -> None
    has_validation: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


class Callback:
    """The protocol; every method is optional."""

    def on_train_begin(self, state: TrainingState) -> None:
        pass

    def on_epoch_begin(self, state: TrainingState) -> None:
        pass

    def on_step_begin(self, state: TrainingState) -> None:
        pass

    def on_step_end(self, state: TrainingState, loss: float, terms, size: int) -> None:
        pass

    def on_epoch_end(self, state: TrainingState) -> None:
        pass

    def on_train_end(self, state: TrainingState) -> None:
        pass

    def on_exception(self, state: TrainingState, error: BaseException) -> None:
        """Training raised ``error``: called on every callback in place of
        ``on_train_end``, before the error goes on. It reaches a callback whose
        ``on_train_begin`` did not run (an earlier callback's raised), so it closes
        only what it opened."""


class HistoryRecorder(Callback):
    """Appends the epoch's row to ``state.history``: the mean loss per point and its
    terms (summed on the device, read once an epoch), the validation summary, the
    learning rate and beta."""

    def on_epoch_begin(self, state):
        self._loss, self._count, self._terms = 0.0, 0, None

    def on_step_end(self, state, loss, terms, size):
        self._loss += loss
        self._count += size
        if terms is not None:
            if self._terms is None:
                self._terms = dict(terms)
            else:
                for key, value in terms.items():
                    self._terms[key] = self._terms[key] + value

    def on_epoch_end(self, state):
        terms = {}
        if self._terms is not None:
            stacked = torch.stack(list(self._terms.values())).double()
            if distributed.is_distributed():  # each rank summed its own shard's terms
                torch.distributed.all_reduce(stacked)
            values = stacked.cpu().tolist()
            terms = {k: v / self._count for k, v in zip(self._terms, values, strict=True)}
        val = state.validation or {}
        state.history.append(
            epoch=state.epoch,
            train_loss=self._loss / self._count,
            val_loss=val.get("loss"),
            beta=getattr(state.module, "beta", None),
            seconds=state.extra.get("seconds"),
            distortion=terms.get("distortion"),
            rate=terms.get("rate"),
            penalty=terms.get("penalty"),
            val_distortion=val.get("distortion"),
            val_rate=val.get("rate"),
            val_penalty=val.get("penalty"),
            kl_per_dim=val.get("kl_per_dim"),
            active_units=val.get("active_units"),
            lr=state.optimizer.param_groups[0]["lr"],
        )


class ProgressBar(Callback):
    """Progress over epochs where a person watches (in the same way as the
    evaluations): a tqdm bar with the last loss per point beside it in a terminal or a notebook;
    elsewhere (a log file, CI) a plain line per epoch with the loss per point, its
    rate and distortion, the validation loss and the points per second, and a line
    every 10 s within an epoch that runs longer.

    :param enabled: True or None (shown, as above; a bar needs a terminal outside CI
        or a notebook) or False (nothing).
    """

    def __init__(self, enabled: bool | None = None):
        self.enabled = enabled
        self.bar = None
        self.lines = False

    def on_train_begin(self, state):
        from tqdm.auto import tqdm

        shown = _progress.front_end(self.enabled) if state.is_writer else None
        self.lines = shown == "lines"
        self.bar = tqdm(
            total=state.epochs,
            initial=state.epoch,
            unit="epoch",
            desc="probae.fit",
            dynamic_ncols=True,
            disable=shown != "bar",
        )

    def on_epoch_begin(self, state):
        if self.lines:
            self._began = self._last = time.perf_counter()
            self._points, self._steps, self._loss = 0, 0, 0.0

    def on_step_end(self, state, loss, terms, size):
        if self.lines:
            self._points += size
            self._steps += 1
            self._loss += loss
            now = time.perf_counter()
            if now - self._last >= _progress.EVERY:
                self._last = now
                _progress.write(
                    f"probae.fit epoch {state.epoch}/{state.epochs}, step "
                    f"{self._steps}/{state.steps_per_epoch}: loss {self._loss / self._points:.3f}"
                    f"; {_progress.rate(self._points, now - self._began, 'point')}"
                )
        elif not self.bar.disable:
            self.bar.set_postfix(loss=f"{loss / size:.3f}", refresh=False)

    def on_epoch_end(self, state):
        if self.lines:
            history = state.history
            parts = [f"loss {history.train_loss[-1]:.3f}"]
            for label, values in (
                ("rate", history.rate),
                ("distortion", history.distortion),
                ("validation loss", history.val_loss),
            ):
                if values and values[-1] is not None:
                    parts.append(f"{label} {values[-1]:.3f}")
            seconds = time.perf_counter() - self._began
            _progress.write(
                f"probae.fit epoch {state.epoch}/{state.epochs}: {', '.join(parts)}; "
                f"{seconds:.2f} s, {_progress.rate(self._points, seconds, 'point')}"
            )
        self.bar.update(1)
        if not self.bar.disable:
            self.bar.set_postfix(loss=f"{state.history.train_loss[-1]:.3f}")

    def on_train_end(self, state):
        if self.bar is not None:
            self.bar.close()

    def on_exception(self, state, error):
        self.on_train_end(state)


class Checkpoint(Callback):
    """Writes the run's checkpoint (model, optimizer, RNG states, history) into
    ``directory`` after every epoch, atomically, from rank 0.

    :param directory: the folder; the file is ``checkpoint.pt``.
    """

    def __init__(self, directory):
        from .saving import CHECKPOINT_NAME

        self.path = Path(directory) / CHECKPOINT_NAME

    def on_epoch_end(self, state):
        if state.is_writer:
            state.write_checkpoint(self.path)


class EarlyStopping(Callback):
    r"""Stops when the validation loss has not improved for ``patience`` epochs, and
    puts back the weights of the best epoch.

    An epoch improves when its validation loss is below the best so far by more
    than ``min_delta``. After epoch t with ``patience`` p, training stops at the
    first t such that none of epochs t-p+1..t improved. The best weights are saved
    as ``best.pt`` in the checkpoint folder, where there is one.

    :param int patience: epochs without improvement before stopping.
    :param float min_delta: the least decrease that counts as one.
    :param bool restore_best: load the best epoch's weights at the end.
    """

    def __init__(self, patience: int = 10, min_delta: float = 0.0, restore_best: bool = True):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer, got {patience!r}")
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"min_delta must be a non-negative number, got {min_delta!r}")
        self.patience, self.min_delta, self.restore_best = patience, float(min_delta), restore_best
        self.best, self.best_epoch, self.wait, self.best_weights = float("inf"), None, 0, None

    def on_train_begin(self, state):
        if not state.has_validation:
            raise ValueError("early stopping needs validation= data")
        self.best, self.best_epoch, self.wait, self.best_weights = float("inf"), None, 0, None
        for epoch, value in zip(state.history.epoch, state.history.val_loss, strict=False):
            self._update(epoch, value)  # a resumed run continues the count
        if self.best_epoch is not None and state.checkpoint_dir is not None:
            path = Path(state.checkpoint_dir) / BEST_NAME
            if path.exists():
                from .saving import read_checkpoint

                # onto the CPU: restoring copies into the live tensors on their device, and
                # a file written on a GPU then also resumes on a host without one
                self.best_weights = read_checkpoint(path, map_location="cpu")["weights"]

    def _update(self, epoch, value) -> bool:
        if value is not None and value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    def on_epoch_end(self, state):
        if self._update(state.epoch, state.history.val_loss[-1]):
            self.best_weights = copy.deepcopy(state.state_dict())
            if state.checkpoint_dir is not None and state.is_writer:
                from .saving import write_checkpoint

                write_checkpoint(
                    {"epoch": state.epoch, "weights": self.best_weights},
                    Path(state.checkpoint_dir) / BEST_NAME,
                )
        elif self.wait >= self.patience:
            state.stop = True

    def on_train_end(self, state):
        if self.restore_best and self.best_weights is not None:
            state.load_state_dict(self.best_weights)


class TensorBoard(Callback):
    """Logs each epoch's History row (losses, terms, learning rate, beta, active units,
    KL per dimension) to TensorBoard through :mod:`torch.utils.tensorboard`; needs the
    ``tensorboard`` package (``pip install probae[tensorboard]``).

    :param log_dir: the event files' folder.
    :param int every_n_steps: also log the batch loss every n steps (0: never; each
        one reads the loss terms from the device).
    """

    SCALARS = (
        "train_loss",
        "val_loss",
        "distortion",
        "rate",
        "penalty",
        "val_distortion",
        "val_rate",
        "val_penalty",
        "active_units",
        "beta",
        "lr",
    )

    def __init__(self, log_dir, every_n_steps: int = 0):
        # refused here, before fit creates any folder, when the package is missing
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "callbacks.TensorBoard needs the tensorboard package: "
                "pip install 'probae[tensorboard]'"
            ) from error
        self._writer_class = SummaryWriter
        self.log_dir = os.fspath(log_dir)
        self.every_n_steps = every_n_steps
        self.writer = None

    def on_train_begin(self, state):
        if not state.is_writer:
            return
        self.writer = self._writer_class(self.log_dir)

    def on_step_end(self, state, loss, terms, size):
        if self.writer is None or not self.every_n_steps or state.step % self.every_n_steps:
            return
        self.writer.add_scalar("step/loss", loss / size, state.step)
        for key, value in (terms or {}).items():
            self.writer.add_scalar(f"step/{key}", float(value) / size, state.step)

    def on_epoch_end(self, state):
        if self.writer is None:
            return
        row = {key: getattr(state.history, key)[-1] for key in self.SCALARS}
        for key, value in row.items():
            if value is not None:
                self.writer.add_scalar(f"epoch/{key}", float(value), state.epoch)
        kl = state.history.kl_per_dim[-1]
        if kl is not None:
            for j, value in enumerate(kl):
                self.writer.add_scalar(f"kl_per_dim/{j}", value, state.epoch)
        self.writer.flush()

    def on_train_end(self, state):
        if self.writer is not None:
            self.writer.close()

    def on_exception(self, state, error):
        self.on_train_end(state)  # what was logged so far is kept


class CSVLogger(Callback):
    """Writes the History as a CSV file (one row per epoch, :meth:`probae.History.to_csv`)
    after every epoch, from rank 0, replacing the file whole: a run stopped at any
    moment leaves the rows of its finished epochs.

    :param path: the CSV file.
    """

    def __init__(self, path):
        self.path = Path(path)

    def on_epoch_end(self, state):
        if not state.is_writer:
            return
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            state.history.to_csv(partial)
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)


class MLflow(Callback):
    """Logs a training run to an MLflow tracking store: the parameters (the model's class
    and constructor options, the epochs, steps per epoch, optimizer and learning rate,
    and ``params``) when training begins, each epoch's History row as metrics at step
    = epoch, and when it ends the saved model (a :func:`probae.save` folder, under
    ``model/``) and the pictures of the run (``history.png``, ``rate_distortion.png``,
    ``kl_per_dimension.png``, ``samples.png`` where the History and the model have
    what they show, under ``pictures/``). Needs the ``mlflow-skinny`` package (``pip
    install probae[mlflow]``; the full ``mlflow`` serves as well). A run whose training
    raises is ended ``FAILED`` (``KILLED`` when interrupted) with the metrics of the
    epochs it finished, never left ``RUNNING``.

    The default store is a folder, ``file:./mlruns``, read by ``mlflow ui
    --backend-store-uri ./mlruns``. MLflow 3 keeps such file stores in maintenance mode
    and refuses them unless ``MLFLOW_ALLOW_FILE_STORE`` is true: for a ``file:`` URI
    that variable is set to true when it is not set at all. A ``sqlite:`` or ``http:``
    URI works as MLflow documents (a database store needs the full ``mlflow``).

    :param str tracking_uri: where the run is stored (default ``"file:./mlruns"``).
    :param str experiment: the experiment's name, made when absent.
    :param str run_name: the run's name (MLflow makes one up when None).
    :param dict params: more parameters to log (values are written as strings).
    :param bool log_model: log the trained model (a probae model only).
    :param bool log_pictures: draw and log the pictures.
    :ivar str run_id: the MLflow run's id once training has begun.
    """

    METRICS = TensorBoard.SCALARS

    def __init__(
        self,
        tracking_uri: str = "file:./mlruns",
        experiment: str = "probae",
        run_name: str | None = None,
        params: dict | None = None,
        log_model: bool = True,
        log_pictures: bool = True,
    ):
        try:  # refused here, before fit creates any folder, when the package is missing
            import mlflow  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "callbacks.MLflow needs the mlflow-skinny package: pip install 'probae[mlflow]'"
            ) from error
        for name, value in (("tracking_uri", tracking_uri), ("experiment", experiment)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"{name} must be a non-empty string, got {value!r}")
        if params is not None and not isinstance(params, dict):
            raise TypeError(f"params must be a dict, got {type(params).__name__}")
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.params = dict(params or {})
        self.log_model, self.log_pictures = bool(log_model), bool(log_pictures)
        self.client = self.run_id = None
        self._running = False  # a run of this fit is open in the store

    def on_train_begin(self, state):
        if not state.is_writer:
            return
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        if self.tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(self.tracking_uri)
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (
            found.experiment_id if found else self.client.create_experiment(self.experiment)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
        self._running = True
        params = {
            "epochs": state.epochs,
            "steps_per_epoch": state.steps_per_epoch,
            "optimizer": type(state.optimizer).__name__,
            "lr": state.optimizer.param_groups[0]["lr"],
        }
        if state.module is not None:
            from .saving import model_config

            config = model_config(state.module) or {}
            params["model"] = config.get("class", type(state.module).__name__)
            for key, value in (config.get("options") or {}).items():
                params[f"model.{key}"] = value
        params.update(self.params)
        self.client.log_batch(
            self.run_id, params=[Param(str(k), str(v)[:6000]) for k, v in params.items()]
        )

    def on_epoch_end(self, state):
        if self.client is None:
            return
        from mlflow.entities import Metric

        history, now = state.history, int(time.time() * 1000)
        metrics = [
            Metric(key, float(values[-1]), now, state.epoch)
            for key in self.METRICS
            if (values := getattr(history, key)) and values[-1] is not None
        ]
        kl = history.kl_per_dim[-1]
        for j, value in enumerate(kl or []):
            metrics.append(Metric(f"kl_per_dim.{j}", float(value), now, state.epoch))
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_train_end(self, state):
        if self.client is None:
            return
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            module = state.module
            if self.log_model and module is not None and hasattr(module, "config"):
                from .saving import save

                save(module, folder / "model")
                self.client.log_artifacts(self.run_id, str(folder / "model"), "model")
            if self.log_pictures and len(state.history):
                pictures = folder / "pictures"
                pictures.mkdir()
                _draw_run_pictures(state.history, module, pictures)
                self.client.log_artifacts(self.run_id, str(pictures), "pictures")
        self.client.set_terminated(self.run_id, "FINISHED")
        self._running = False

    def on_exception(self, state, error):
        """Ends the run as ``FAILED`` (``KILLED`` on an interrupt), keeping the metrics
        of the epochs done; no model or pictures are logged."""
        if not self._running:
            return
        killed = isinstance(error, (KeyboardInterrupt, SystemExit))
        self.client.set_terminated(self.run_id, "KILLED" if killed else "FAILED")
        self._running = False


def _draw_run_pictures(history, module, folder: Path) -> list:
    """The pictures of a run that its History and model have the data for."""
    from . import viz

    drawn = [viz.history_plot(history, folder / "history.png")]
    if any(r is not None for r in history.rate):
        drawn.append(viz.rate_distortion(history, folder / "rate_distortion.png"))
    if any(k is not None for k in history.kl_per_dim):
        drawn.append(viz.kl_per_dimension(history, folder / "kl_per_dimension.png"))
    if callable(getattr(module, "sample", None)) and getattr(module, "c_shape", None) is None:
        try:
            drawn.append(viz.sample_grid(module, 64, folder / "samples.png", seed=0))
        except ValueError:  # data that are not pictures
            pass
    return drawn
