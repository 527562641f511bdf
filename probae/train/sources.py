"""Where a run's batches come from: the training and validation sources
(:mod:`probae.batches`: tensors on the model's device, a streamed torch Dataset or
DataLoader, or a program's own batches), and what a batch hands the model and guide."""

from __future__ import annotations

import math

import torch
from pyro import poutine

from .. import _validate, batches, distributed, importance
from .. import data as _data
from .._common import device_of, prepare


def _args(x, c):
    return (x,) if c is None else (x, c)


def _batch_args(source, batch):
    """A batch's arguments: a program's own, or ``(x,)`` / ``(x, c)``."""
    return batch if getattr(source, "program", False) else _args(*batch)


def _kwargs(args) -> dict:
    return getattr(args, "kwargs", {})


def _dynamic(args, binarize, observed):
    """The batch's arguments with the observation drawn afresh (binarize='dynamic')."""
    if binarize != "dynamic":
        return args
    drawn = list(args)
    drawn[observed] = torch.bernoulli(drawn[observed])
    return importance.Arguments(drawn, _kwargs(args))


def _outside_unit_interval(x) -> bool:
    low, high = _validate.value_range(x)
    return not (0 <= low and high <= 1)  # NaN is outside too


def _training_data(data, module, c, binarize, name, observed=0):
    x, c = prepare(data, module, c, name=name, check_support=binarize is None and not observed)
    if observed and binarize is not None:
        name = "c" if name == "data" else f"{name}_c"
        return x, _training_data(c, None, None, binarize, name)[0]
    if binarize is not None:
        if _outside_unit_interval(x):
            low, high = _validate.value_range(x)
            raise ValueError(
                f"binarize={binarize!r} needs {name} in [0, 1], got values in "
                f"[{low:.4g}, {high:.4g}]"
            )
        if binarize == "static":
            x = _data.binarize(x, seed=0)
    return x, c


def _program_source(data, pair, c, condition, binarize, name):
    """A :class:`probae.batches.Program` over a program's own batches, for training."""
    if c is not None or condition is not None:
        raise ValueError(
            f"c= and condition= go with {name} given as a tensor or data set; batches of a "
            "program's own arguments carry their conditions themselves"
        )
    if binarize == "static":
        raise ValueError(
            f"binarize='static' needs {name} as a tensor or data set (one seeded draw of the "
            "whole set); use binarize='dynamic' or binarize the data first"
        )
    device = device_of(pair.module) if pair.module is not None else None
    source = batches.Program(data, pair.model, device, name)
    if source.one_shot and name == "data":
        raise ValueError(
            f"{name} is an iterator, which can be read once, and fit reads the data every "
            "epoch: pass a list of batches, a DataLoader, or an object whose iter() starts afresh"
        )
    return source


def _training_source(o):
    """The training data of the checked options ``o`` as a batch source."""
    module, binarize = o.module, o.binarize
    if batches.is_program_data(o.data, module):
        return _program_source(o.data, o.pair, o.c, o.condition, binarize, "data")
    x_shape = getattr(module, "x_shape", None)
    data = batches.materialize(o.data, o.in_memory, o.num_workers, x_shape=x_shape)
    if batches.is_streamable(data):
        if binarize == "static":
            raise ValueError(
                "binarize='static' needs in-memory data (one seeded draw of the whole set); "
                "use binarize='dynamic' or binarize the data first"
            )
        if o.observed:
            raise ValueError("observation='c' needs in-memory data")
        checked = o.check_data and binarize is None
        return batches.streamed(data, module, o.c, o.condition, "data", o.num_workers, checked)
    c_shape = getattr(module, "c_shape", None)
    c = _data.resolve_condition(data, o.condition, o.c, c_shape, "data")
    if o.observed and c is None:
        raise ValueError("observation='c' needs a condition c (c= or condition=)")
    return batches.InMemory(*_training_data(data, module, c, binarize, "data", o.observed))


def _validation_source(o):
    """The validation data of the checked options ``o`` as a batch source, or None."""
    validation, module, binarize, condition = o.validation, o.module, o.binarize, o.condition
    if validation is None:
        return None
    if batches.is_program_data(validation, module):
        return _program_source(validation, o.pair, o.validation_c, None, binarize, "validation")
    x_shape = getattr(module, "x_shape", None)
    validation = batches.materialize(validation, o.in_memory, o.num_workers, x_shape=x_shape)
    if batches.is_streamable(validation):
        return batches.streamed(
            validation,
            module,
            o.validation_c,
            None if torch.is_tensor(condition) else condition,
            "validation",
            o.num_workers,
            o.check_data and binarize is None,
        )
    validation_c = o.validation_c
    if validation_c is None and not torch.is_tensor(condition):
        c_shape = getattr(module, "c_shape", None)
        validation_c = _data.resolve_condition(validation, condition, None, c_shape, "validation")
    val = list(_training_data(validation, module, validation_c, binarize, "validation", o.observed))
    if binarize == "dynamic":  # one fixed draw, so epochs are comparable
        val[o.observed] = _data.binarize(val[o.observed], seed=0)
    return batches.InMemory(*val)


def _steps_per_epoch(train, batch_size) -> int:
    """Optimizer steps in one epoch (0 for a program's batches of unknown number)."""
    if getattr(train, "program", False):
        return len(train)
    if train.streamed and train.loader is not None:
        return len(train.loader)
    return math.ceil(math.ceil(len(train) / distributed.world_size()) / batch_size)


def _check_point_count(pair, probe) -> None:
    """The points of a program's batch are counted as its first tensor's leading
    dimension (for reduction="mean" and the per-point losses reported): checked once
    against the size of the data plate."""
    n = importance.points(probe)
    with poutine.block(), torch.no_grad(), importance.preserve_rng(probe):
        guide_trace = poutine.trace(pair.guide).get_trace(*probe, **_kwargs(probe))
        model_trace = poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(
            *probe, **_kwargs(probe)
        )
    try:
        plate = importance.data_plate((guide_trace, model_trace), size=n)
    except importance.PairError:
        return  # no data plate: the loss is still the program's, per point unknown
    for trace in (model_trace, guide_trace):
        for site in trace.nodes.values():
            for frame in site.get("cond_indep_stack", ()):
                whole = frame.full_size == n  # the whole set, subsampled inside
                if frame.name == plate and frame.size not in (-1, n) and not whole:
                    raise ValueError(
                        f"the first tensor of each batch has {n} rows but the data plate "
                        f"{plate!r} has {frame.size} points: put the batch's data first, or "
                        "pass reduction='sum' (the program's own loss, as SVI takes it)"
                    )
