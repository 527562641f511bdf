"""Helpers shared by training and evaluation: model/guide pairs and data checks."""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _validate
from . import data as _data
from ._reading import read_all


class Pair(NamedTuple):
    """A Pyro model/guide pair, and the module holding them (None for functions).

    ``vectorized`` says whether the pair broadcasts over a sample dimension left of
    its plates (see :func:`probae.checks.broadcast_error`); estimators draw one sample
    at a time for a pair that does not.
    """

    model: object
    guide: object
    module: torch.nn.Module | None
    vectorized: bool = True


def as_pair(model_or_pair, name: str = "model") -> Pair:
    """Accepts a probae model (anything with ``.model`` and ``.guide``) or a
    ``(model, guide)`` tuple of callables."""
    if isinstance(model_or_pair, (tuple, list)):
        if len(model_or_pair) != 2 or not all(callable(f) for f in model_or_pair):
            raise TypeError(f"{name} as a pair must be (model, guide), two callables")
        model, guide = model_or_pair
        module = model_or_pair if isinstance(model_or_pair, torch.nn.Module) else None
        owners = [getattr(f, "__self__", None) for f in model_or_pair]
        if module is None and owners[0] is not None and owners[0] is owners[1]:
            module = owners[0] if isinstance(owners[0], torch.nn.Module) else None
        return Pair(model, guide, module)
    if callable(getattr(model_or_pair, "model", None)) and callable(
        getattr(model_or_pair, "guide", None)
    ):
        module = model_or_pair if isinstance(model_or_pair, torch.nn.Module) else None
        return Pair(model_or_pair.model, model_or_pair.guide, module)
    raise TypeError(
        f"{name} must be a probae model (with .model and .guide) or a (model, guide) pair, "
        f"got {type(model_or_pair).__name__}"
    )


def device_of(module, default=None) -> torch.device:
    if module is not None:
        for tensor in (*module.parameters(), *module.buffers()):
            return tensor.device
    return torch.device("cpu") if default is None else default


def _dtype_of(module):
    if module is not None:
        for tensor in module.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
    return None


def prepare(data, module, c=None, name: str = "data", check_support: bool = True):
    """Returns ``(x, c)`` as checked tensors on the module's device.

    Checks shape and dtype against the module's ``x_shape`` and the values against
    its likelihood's support, once per call (not per batch). A torch Dataset or
    DataLoader is read into memory here (see :mod:`probae.batches` for streaming).
    """
    if isinstance(data, (torch.utils.data.Dataset, torch.utils.data.DataLoader)) and not (
        isinstance(data, _data.Dataset)
    ):
        data = read_all(data, getattr(module, "x_shape", None))
    x = _data.as_tensor(data, name)
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must hold floating-point values, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[0] == 0:
        # (N,) is N scalar points
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    if not _validate.all_finite(x):
        raise ValueError(f"{name} contains NaN or infinite values")
    device = device_of(module, x.device)
    dtype = _dtype_of(module)
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but the model's parameters are {dtype}: convert one "
            f"to the other ({name}.to({dtype}) or model.to({x.dtype}))"
        )
    x = x.to(device)
    if module is not None and hasattr(module, "check_x"):
        module.check_x(x, name)
    likelihood = getattr(module, "likelihood", None)
    if check_support and likelihood is not None and hasattr(likelihood, "validate"):
        likelihood.validate(x)
    if c is not None:
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"c must be a torch.Tensor, got {type(c).__name__}")
        if c.is_floating_point() and not _validate.all_finite(c):
            raise ValueError("c contains NaN or infinite values")
        if c.shape[0] != x.shape[0]:
            raise ValueError(
                f"c must have one row per data point: {name} has {x.shape[0]}, c has {c.shape[0]}"
            )
        c = c.to(device)
    return x, c


def positive_int(name: str, value) -> int:
    """``value`` as a positive Python int; integer NumPy and PyTorch scalars count."""
    try:
        return _validate.integer(name, value, minimum=1)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
