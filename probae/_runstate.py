"""What a training checkpoint records about its run, and the checks made on resuming
and before writing one: the data's fingerprint and the options that define the run,
finite parameters, and the last good checkpoint an error can point at."""

from __future__ import annotations

import hashlib
import inspect
import math
from pathlib import Path

import torch

from . import _validate

#: fit() options that define a run (they change its trajectory): resuming with another
#: value is refused. ``kl_schedule`` covers ``capacity``; ``optimizer`` is the class of
#: the optimizer, compared by name (its settings are restored from the checkpoint).
DEFINING = (
    "loss",
    "num_particles",
    "batch_size",
    "binarize",
    "beta_warmup",
    "seed",
    "reduction",
    "gradient",
    "kl_schedule",
    "lr_schedule",
    "clip_grad_norm",
    "precision",
    "optimizer",
    "world_size",
)
#: fit() options that may change on resume (the rest of fit's arguments are the data,
#: the model and those in DEFINING): they decide how long, how fast or how watched the
#: run is, not where it goes
ALLOWED_ON_RESUME = (
    "epochs",
    "lr",
    "validation",
    "validation_c",
    "progress",
    "validate",
    "check_data",
    "num_workers",
    "in_memory",
    "callbacks",
    "early_stopping",
    "threads",
    "compile",
)
#: attributes of schedules that are their progress, not their settings
_PROGRESS = frozenset({"step", "target", "scheduler", "elbo"})


#: no default-optimizer learning rate above this trains anything (Adam's steps are of
#: the order of lr), and far larger ones overflow float32 inside the optimizer
MAX_LR = 1e6


def check_particles(num_particles) -> int:
    return _validate.samples("num_particles", num_particles)


def check_options(lr, seed, beta_warmup) -> tuple:
    """fit()'s numeric options checked, each named: ``(lr, seed, beta_warmup)``."""
    if lr is not None:
        lr = _validate.number("lr", lr, low=0.0, high=MAX_LR, low_open=True)
    seed = _validate.seed("seed", seed)
    beta_warmup = _validate.integer("beta_warmup", beta_warmup, minimum=0)
    return lr, seed, beta_warmup


def fingerprint(x: torch.Tensor, c: torch.Tensor | None = None) -> str:
    """SHA-256 of the training data (shape, dtype, values) and of its conditions."""
    digest = hashlib.sha256()
    for name, tensor in (("x", x), ("c", c)):
        if tensor is None:
            continue
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe(value):
    """A plain, comparable description of an option: numbers, names and None as they
    are; a schedule as its class and settings (not its progress); a function by its
    qualified name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if inspect.isroutine(value) or isinstance(value, type) or not hasattr(value, "__dict__"):
        return _qualified(value)
    settings = {
        k: describe(v)
        for k, v in sorted(vars(value).items())
        if not k.startswith("_") and k not in _PROGRESS
    }
    return {"class": type(value).__name__, **settings}


def _qualified(value) -> str:
    module = getattr(value, "__module__", None) or type(value).__module__
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    return f"{module}.{name}"


def optimizer_kind(optimizer) -> str:
    """The optimizer's algorithm by name: its nearest class among PyTorch's optimizers
    (a subclass of Adam keeps Adam's state, and is Adam here), else its own class; a
    :mod:`pyro.optim` optimizer by the PyTorch class it builds per parameter."""
    pyro_optim = getattr(optimizer, "pyro_optim", None)
    if pyro_optim is not None:
        built = getattr(pyro_optim, "pt_optim_constructor", type(pyro_optim))
        return f"pyro.optim({getattr(built, '__name__', type(built).__name__)})"
    for cls in type(optimizer).__mro__:
        if cls.__module__.startswith("torch.optim") and cls is not torch.optim.Optimizer:
            return cls.__name__
    return type(optimizer).__name__


def precision_name(precision):
    """``"bf16"`` or None, however fit was told."""
    return "bf16" if precision in ("bf16", "bfloat16") else None


def record(data_fingerprint: str, lr, factory, **options) -> dict:
    """The run's record stored in every checkpoint: the data's fingerprint, the
    learning rate of the default optimizer, and every option in :data:`DEFINING`
    (``optimizer`` the optimizer's class name), described by :func:`describe`."""
    return {
        "data": data_fingerprint,
        "lr": None if factory is not None or lr is None else float(lr),
        **{key: describe(options[key]) for key in DEFINING},
    }


def check_resume(stored: dict | None, current: dict, model_stored, model_now, path) -> None:
    """Refuses to resume the run in ``path`` with other data, model options or defining
    options, naming the first that differs. Checkpoints of earlier probae versions carry
    no record: only their weights are checked (on loading them)."""
    where = f"the run in {str(path)!r}"
    allowed = ", ".join(ALLOWED_ON_RESUME)
    if model_stored is not None and model_now is not None:
        difference = _first_difference(model_stored, model_now)
        if difference is not None:
            key, then, now = difference
            raise ValueError(
                f"checkpoint {str(path)!r} does not match this model: the model's {key} is "
                f"{now!r}, the run's is {then!r}; build the model as the run did (only "
                f"{allowed} may change on resume)"
            )
    if stored is None:
        return
    for key in DEFINING:
        if key == "seed" and current[key] is None:
            continue  # the random streams are restored from the checkpoint either way
        if key in stored and stored[key] != current[key]:
            then, now = stored[key], current[key]
            if isinstance(then, dict) and isinstance(now, dict):  # a schedule's setting
                inner, then, now = _first_difference(then, now)
                what = f"{key} differs from the run's (its {inner} is {now!r}, the run's {then!r})"
            else:
                what = f"{key}={now!r} differs from the run's {key}={then!r}"
            raise ValueError(f"cannot resume {where}: {what} (only {allowed} may change on resume)")
    if stored.get("data") != current["data"]:
        raise ValueError(
            f"cannot resume {where}: data differs from the data it was trained on (their "
            "fingerprints differ); pass the same data (and c), or start a new run in "
            "another folder"
        )


def _first_difference(then, now, key=""):
    if isinstance(then, dict) and isinstance(now, dict):
        for k in list(then) + [k for k in now if k not in then]:
            found = _first_difference(then.get(k), now.get(k), k if k != "options" else key)
            if found is not None:
                return found
        return None
    if isinstance(then, (list, tuple)) and isinstance(now, (list, tuple)):
        if len(then) == len(now) and all(
            _first_difference(a, b, key) is None for a, b in zip(then, now, strict=True)
        ):
            return None
        return key or "configuration", then, now
    if then != now and not (_is_nan(then) and _is_nan(now)):
        return key or "configuration", then, now
    return None


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def non_finite(params, optimizer) -> str | None:
    """The first non-finite parameter or optimizer state, described; None if all are
    finite. All are checked on their devices and read once per device (one host-device
    synchronisation, not one per tensor); the search for the culprit runs only on failure."""
    tensors = [p.detach() for p in params] + [
        value
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value) and value.is_floating_point()
    ]
    by_device = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(torch.isfinite(t).all())
    if all(bool(torch.stack(flags).all()) for flags in by_device.values()):
        return None
    for i, p in enumerate(params):
        if not torch.isfinite(p.detach()).all():
            return f"parameter {i} (shape {tuple(p.shape)})"
    for i, state in enumerate(optimizer.state.values()):
        for name, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point():
                if not torch.isfinite(value).all():
                    return f"optimizer state {name!r} of parameter {i}"
    return None


def last_good(checkpoint: Path | None, epoch: int | None = None) -> str:
    """'; the last good checkpoint is ...' when one exists on disk, else what to do."""
    if checkpoint is None:
        return ""
    if checkpoint.is_file():
        at = f" (epoch {epoch})" if epoch else ""
        return (
            f"; the last good checkpoint is {str(checkpoint)!r}{at}: resume from it, with a "
            "lower lr for instance"
        )
    return f"; no checkpoint was written in {str(checkpoint.parent)!r} (no epoch finished)"


def check_validation(summary, epoch: int, checkpoint, saved_epoch) -> None:
    """Refuses a validation summary holding a non-finite number (nothing non-finite is
    recorded or saved), naming the validation data and the figure."""
    if summary is None:
        return
    for key, value in summary.items():
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            figure = "loss" if key == "loss" else f"{key.replace('_', ' ')}"
            raise FloatingPointError(
                f"the validation data's {figure} is not finite ({bad[0]}) after epoch "
                f"{epoch}: the model gives some validation points a density too small "
                "(or too large) for float32, which a Gaussian or Laplace likelihood does "
                "for points far from anything in the training data; check the validation "
                "data. Training stopped and this epoch is not saved"
                + last_good(checkpoint, saved_epoch)
            )
