"""The options of :func:`probae.fit`, checked and put in their working form before
anything runs: a bad value is refused with an error naming its argument."""

from __future__ import annotations

from types import SimpleNamespace

from .. import _progress, _runstate, objectives, schedules
from .. import callbacks as _callbacks
from .._common import as_pair, positive_int

BINARIZE = (None, "static", "dynamic")
OBSERVATIONS = ("x", "c")


def _checked(options: dict) -> SimpleNamespace:
    """``fit``'s keywords as attributes, checked; adds ``pair``, ``module``, ``observed``
    (the index of the observed argument) and ``extra_callbacks``, and folds
    ``beta_warmup=`` and ``capacity=`` into ``kl_schedule``."""
    o = SimpleNamespace(**options)
    o.pair = as_pair(o.model)
    o.module = o.pair.module
    o.epochs = positive_int("epochs", o.epochs)
    o.batch_size = positive_int("batch_size", o.batch_size)
    objectives.check_loss(o.loss)
    if o.binarize not in BINARIZE:
        raise ValueError(f"binarize must be one of {list(BINARIZE)}, got {o.binarize!r}")
    if o.observation not in OBSERVATIONS:
        raise ValueError(f"observation must be 'x' or 'c', got {o.observation!r}")
    o.observed = OBSERVATIONS.index(o.observation)
    _progress.check(o.progress)
    o.num_particles = _runstate.check_particles(o.num_particles)
    o.lr, o.seed, o.beta_warmup = _runstate.check_options(o.lr, o.seed, o.beta_warmup)
    if o.beta_warmup and not hasattr(o.module, "beta"):
        raise ValueError("beta_warmup needs a model with a beta attribute (a probae model)")
    if o.resume and o.checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=")
    o.kl_schedule = _kl_schedule(o.kl_schedule, o.capacity, o.beta_warmup)
    o.lr_schedule = schedules.learning_rate(o.lr_schedule)
    clip = o.clip_grad_norm
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"clip_grad_norm must be a positive number, got {clip!r}")
    o.extra_callbacks = _callback_list(o.callbacks, o.early_stopping)
    return o


def _kl_schedule(kl_schedule, capacity, beta_warmup):
    """The one KL schedule of ``kl_schedule=``, ``capacity=`` or ``beta_warmup=``."""
    if capacity is not None:
        if not isinstance(capacity, schedules.Capacity):
            raise TypeError(
                f"capacity must be a probae.schedules.Capacity, got {type(capacity).__name__}"
            )
        if kl_schedule is not None:
            raise ValueError("give capacity= or kl_schedule=, not both")
        kl_schedule = capacity
    if beta_warmup:
        if kl_schedule is not None:
            raise ValueError("give beta_warmup= or kl_schedule=, not both")
        kl_schedule = schedules.KLWarmup(positive_int("beta_warmup", beta_warmup))
    if kl_schedule is not None and not isinstance(
        kl_schedule, (schedules.KLWarmup, schedules.Capacity)
    ):
        raise TypeError(
            "kl_schedule must be a schedules.KLWarmup or schedules.Capacity, "
            f"got {type(kl_schedule).__name__}"
        )
    return kl_schedule


def _callback_list(callbacks, early_stopping) -> list:
    """The user's callbacks: early stopping (a patience or an object) first."""
    listed = []
    if early_stopping is not None:
        if isinstance(early_stopping, _callbacks.EarlyStopping):
            listed.append(early_stopping)
        else:
            listed.append(_callbacks.EarlyStopping(patience=early_stopping))
    for callback in callbacks or ():
        if not isinstance(callback, _callbacks.Callback):
            raise TypeError(
                f"callbacks must be probae.callbacks.Callback objects, got {type(callback).__name__}"
            )
        listed.append(callback)
    return listed
