"""The callbacks a run carries and how the loop calls them: the schedules (learning
rate, KL) and a :mod:`pyro.optim` scheduler as callbacks, the History, the user's
callbacks, checkpointing and progress, in the order they are called."""

from __future__ import annotations

import warnings

from .. import callbacks as _callbacks
from .._pyro_optim import PyroOptimizer


class _ScheduleHook(_callbacks.Callback):
    """A :class:`probae.schedules.Schedule` driven by the loop: begun before training,
    applied before every step, ended after the last step (or when training fails)."""

    def __init__(self, schedule):
        self.schedule = schedule

    def on_train_begin(self, state):
        self.schedule.begin(state)

    def on_step_begin(self, state):
        self.schedule.apply(state)

    def on_train_end(self, state):
        self.schedule.end(state)

    def on_exception(self, state, error):
        self.schedule.end(state)


class _PyroSchedulerStep(_callbacks.Callback):
    """Steps a pyro.optim scheduler after every epoch."""

    def __init__(self, optim):
        self.optim = optim

    def on_epoch_end(self, state):
        self.optim.end_epoch()


def _hooked(plan) -> list:
    """The run's callbacks in calling order: the schedules, a pyro.optim scheduler, the
    History, early stopping and the user's callbacks, the checkpoint, the progress bar."""
    o = plan.o
    hooked = [_ScheduleHook(s) for s in (o.lr_schedule, o.kl_schedule) if s is not None]
    if isinstance(plan.optim, PyroOptimizer):
        hooked.append(_PyroSchedulerStep(plan.optim))
    hooked += [_callbacks.HistoryRecorder(), *o.extra_callbacks]
    if plan.checkpoint is not None:
        hooked.append(_callbacks.Checkpoint(o.checkpoint_dir))
    hooked.append(_callbacks.ProgressBar(o.progress))
    return hooked


def _call(hooked, name, *args):
    for callback in hooked:
        getattr(callback, name)(*args)


def _failed(hooked, state, error: BaseException) -> None:
    """Tells every callback that training raised ``error`` (its ``on_exception``); a
    callback that fails in turn is reported as a warning, so that every one is told
    and the original error is the one raised."""
    for callback in hooked:
        try:
            callback.on_exception(state, error)
        except Exception as failure:  # the original error is the one that goes on
            warnings.warn(
                f"{type(callback).__name__}.on_exception raised {failure!r} while "
                f"training stopped on {type(error).__name__}",
                RuntimeWarning,
                stacklevel=3,
            )
