"""Helpers shared by the evaluation modules: the model/guide pair and data of a
call, batches of points, eval mode, the latent site "z" and its prior, Monte Carlo
standard errors, and ArviZ imported quietly."""

from __future__ import annotations

import contextlib
import math
import warnings
from contextlib import contextmanager

import pyro
import torch
from pyro import poutine

from .. import importance
from .._common import as_pair, device_of, positive_int, prepare
from ..batches import Program, Streamed, is_program_data, is_streamable, materialize, streamed
from ..checks import broadcast_error, check_sample_dimension


def _args(x, c):
    return (x,) if c is None else (x, c)


def _per_batch(x, c, batch_size):
    if isinstance(x, Program):  # the program's own batches, as they come
        yield from x.batches()
        return
    if isinstance(x, Streamed):  # a torch Dataset or DataLoader, read in order
        for xb, cb in x.in_order(batch_size):
            yield _args(xb, cb)
        return
    for start in range(0, x.shape[0], batch_size):
        stop = start + batch_size
        yield _args(x[start:stop], None if c is None else c[start:stop])


def _setup(model, data, c, batch_size, what, needs_density, one_at_a_time=False, plate=None):
    """The pair, the data as a source of batches, and the pair's plate nesting, after
    the checks every estimator makes on a first batch.

    :param bool one_at_a_time: the caller can draw one sample at a time: a pair that does
        not broadcast over a sample dimension is then marked ``vectorized=False`` (with
        one notice) instead of refused.
    :returns: ``(pair, x, c, batch_size, nesting)``.
    """
    pair = as_pair(model)
    if is_program_data(data, pair.module):
        if c is not None:
            raise ValueError(
                "c= goes with data given as a tensor or data set; batches of a program's own "
                "arguments carry their conditions themselves"
            )
        x = Program(data, pair.model, device_of(pair.module) if pair.module is not None else None)
        probe = x.head()
    else:
        x, c, probe = _tensor_source(pair, data, c)
    batch_size = positive_int("batch_size", batch_size)
    # The probes run the pair as the estimate will: in eval mode (a guide may add
    # training-only terms that draw random numbers of their own). They leave the random
    # stream where it was, so that an estimate depends on the seed, not on the probe.
    with torch.no_grad(), _eval_mode(pair.module), importance.preserve_rng(probe):
        if needs_density:
            importance.check_guide_has_density(pair.guide, probe, what)
        nesting = importance.max_plate_nesting(pair.model, pair.guide, probe)
        error = broadcast_error(pair.model, pair.guide, probe, nesting)
        if error is not None:
            if not one_at_a_time:
                check_sample_dimension(pair.model, pair.guide, probe, nesting, what)
            warnings.warn(
                f"{what}: the pair does not broadcast over a sample dimension "
                f"({type(error).__name__}: {error}); its samples are drawn one at a time, "
                "exactly but more slowly than in one vectorized pass",
                UserWarning,
                stacklevel=3,
            )
            pair = pair._replace(vectorized=False)
        _say_enumeration(pair, probe, what)
    return pair, x, c, batch_size, nesting


def _say_enumeration(pair, probe, what: str) -> None:
    """The notice that a guide site marked for enumeration is sampled by the estimators."""
    guide_trace = _guide_trace(pair.guide, probe)
    marked = [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and site["infer"].get("enumerate") in ("parallel", "sequential")
    ]
    if marked:
        warnings.warn(
            f"{what} samples the guide's sites {marked} (marked for enumeration) from the "
            "guide, each draw weighted by its guide probability, which keeps the estimate "
            "unbiased; the model's own enumerated sites are summed out exactly",
            UserWarning,
            stacklevel=4,
        )


def _tensor_source(pair, data, c):
    data = materialize(data, x_shape=getattr(pair.module, "x_shape", None))
    if is_streamable(data):
        x = streamed(data, pair.module, c, None, "data")
        probe = _args(*x.head(2))
    else:
        x, c = prepare(data, pair.module, c)
        probe = _args(x[:2], None if c is None else c[:2])
    return x, c, probe


class _ValidateOnce:
    """Pyro's distribution checks on the first draw only, where the data's values were
    checked against the likelihood's support up front (:func:`probae._common.prepare`):
    each check reads a flag on the host, a host-device synchronisation per site and
    chunk. A user's own pair keeps them on every draw (its data is not checked ahead)."""

    def __init__(self, module):
        likelihood = getattr(module, "likelihood", None)
        self.checked_ahead = callable(getattr(likelihood, "validate", None))
        self.first = True

    def __call__(self):
        if self.first or not self.checked_ahead:
            self.first = False
            return contextlib.nullcontext()
        return pyro.validation_enabled(False)


@contextmanager
def _eval_mode(module):
    """The module in eval mode (no dropout) for the block, restored afterwards."""
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        yield
    finally:
        if module is not None:
            module.train(was_training)


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz
    return arviz


# -- data and conditions ---------------------------------------------------------------


def _data_tensor(data):
    from ..data import as_tensor

    if is_streamable(data):  # only its shape and size are needed: read one batch
        stream = streamed(materialize(data), None, None, None, "data")
        x = stream.head(1)[0]
        return torch.empty(len(stream), *x.shape[1:], device="meta")  # shape only
    x = as_tensor(data)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"data must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    return x


def _condition(model, data, c, condition, what):
    from .. import data as _data

    c = _data.resolve_condition(data, condition, c, getattr(model, "c_shape", None))
    if c is None:
        raise ValueError(
            f"{what} needs a condition: data with a .c field (data.quadrants), c=, or "
            "condition='label'"
        )
    return c


# -- helpers for site "z" --------------------------------------------------------------


def _latent_site(trace, what: str):
    site = trace.nodes.get("z")
    if site is None or site["type"] != "sample" or site["is_observed"]:
        raise ValueError(f"{what} needs the guide to sample the latent at a site named 'z'")
    return site


def _guide_trace(guide, args):
    with poutine.block():
        return poutine.trace(guide).get_trace(*args, **getattr(args, "kwargs", {}))


def _prior_of(pair, args, what: str):
    """p(z) for the points of ``args``, batch shape ``(B,)``: the module's prior if it
    has one, else the model's distribution at site "z" (which must not depend on an
    enumerated site)."""
    prior = getattr(pair.module, "prior", None)
    n = importance.points(args)
    if isinstance(prior, torch.nn.Module):
        return prior((n,)) if len(args) == 1 else prior((n,), args[1])
    with poutine.block():
        guide_trace = poutine.trace(pair.guide).get_trace(*args, **getattr(args, "kwargs", {}))
        model_trace = poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(
            *args, **getattr(args, "kwargs", {})
        )
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and site["infer"].get("enumerate") == "parallel":
            raise ValueError(
                f"{what} needs p(z) in closed form, but the model's site {name!r} is enumerated; "
                "give the pair's module a .prior returning the marginal p(z)"
            )
    site = model_trace.nodes.get("z")
    if site is None or site["type"] != "sample":
        raise ValueError(f"{what} needs the model to sample the latent at a site named 'z'")
    return site["fn"]


def _mean_and_stderr(values: torch.Tensor):
    """Mean of ``(S, N)`` draws and its Monte Carlo standard error: the spread of the
    draws within each point (the data set is fixed), or across all draws if S = 1."""
    values = values.double()
    s, n = values.shape
    if s > 1:
        stderr = (values.var(0).sum() / s).sqrt() / n
    else:
        stderr = values.std() / math.sqrt(n) if n > 1 else values.new_tensor(float("nan"))
    return values.mean().item(), stderr.item()
