"""One optimizer step: a batch's arguments (drawn afresh under ``binarize="dynamic"``),
its loss under the run's precision, the finite-loss check, the backward pass of the
batch's loss (per point or summed) and the update.

The options that act on every step live in :class:`_StepOptions`; an option of that
kind is added there and read in :meth:`_Step.__call__`, not in the loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro import poutine

from .. import _runstate, distributed, importance
from .sources import _batch_args, _dynamic, _kwargs, _outside_unit_interval


@dataclass(frozen=True)
class _StepOptions:
    """What every step applies: ``binarize`` (``"dynamic"`` draws the observation
    afresh), ``observed`` (the index of the observed argument), ``check_data`` (check
    streamed batches lie in [0, 1] before binarizing), ``reduction`` (``"mean"``: the
    loss per point is differentiated, ``"sum"``: the batch's whole loss) and
    ``clip_grad_norm`` (the gradients' largest total norm, or None)."""

    binarize: str | None
    observed: int
    check_data: bool
    reduction: str
    clip_grad_norm: float | None

    @classmethod
    def of(cls, o) -> _StepOptions:
        """The step's options among the checked options ``o`` of :func:`probae.fit`."""
        return cls(o.binarize, o.observed, o.check_data, o.reduction, o.clip_grad_norm)


class _Step:
    """The optimizer step of a plan: called with a batch, it updates the parameters and
    returns the batch's summed loss (a float, summed over the ranks) and its number of
    points (over the ranks)."""

    def __init__(self, plan, options: _StepOptions):
        self.plan, self.options = plan, options

    def __call__(self, state, index, batch) -> tuple[float, int]:
        plan, opt = self.plan, self.options
        train, params, optim = plan.train, plan.params, plan.optim
        world = distributed.world_size()
        args = _batch_args(train, batch)
        count = importance.points(args)
        if opt.binarize is not None and train.streamed:
            if opt.check_data and _outside_unit_interval(args[opt.observed]):
                raise ValueError(f"binarize={opt.binarize!r} needs data in [0, 1]")
        args = _dynamic(args, opt.binarize, opt.observed)
        with poutine.trace(param_only=True) as capture, plan.autocast():
            batch_loss = plan.loss_of(*args, **_kwargs(args))
        value = batch_loss.item()
        if world > 1:  # every rank sees the same total, so all stop together
            value = distributed.all_sum(value, train.device)
        if not math.isfinite(value):
            where = _runstate.last_good(plan.checkpoint, plan.saved["epoch"])
            raise FloatingPointError(
                f"non-finite loss ({value}) at epoch {state.epoch}, step {index + 1}: "
                f"training stopped before the update{where}"
            )
        new = params.add_from_trace(capture.trace)
        if new:
            optim.add_param_group({"params": new})
        optim.zero_grad(set_to_none=True)
        (batch_loss / count if opt.reduction == "mean" else batch_loss).backward()
        if opt.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params.params, opt.clip_grad_norm)
        optim.step()
        state.step += 1
        return value, count * world
