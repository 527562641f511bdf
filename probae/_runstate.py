"""What a training checkpoint records about its run, and the checks made on resuming
and before writing one: the data's fingerprint and the options that define the run,
finite parameters, and the last good checkpoint an error can point at."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from . import _validate

#: fit() options that define a run: resuming with another value is refused
DEFINING = (
    "loss",
    "num_particles",
    "batch_size",
    "binarize",
    "beta_warmup",
    "seed",
    "reduction",
)
#: fit() options that may change on resume (the rest of fit's arguments are the data,
#: the model and those in DEFINING)
ALLOWED_ON_RESUME = ("epochs", "lr", "validation", "validation_c", "progress", "validate")


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


def record(data_fingerprint: str, lr, optimizer, **options) -> dict:
    """The run's record stored in every checkpoint."""
    return {
        "data": data_fingerprint,
        "lr": None if optimizer is not None or lr is None else float(lr),
        **{key: options[key] for key in DEFINING},
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
            raise ValueError(
                f"cannot resume {where}: {key}={current[key]!r} differs from the run's "
                f"{key}={stored[key]!r} (only {allowed} may change on resume)"
            )
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
