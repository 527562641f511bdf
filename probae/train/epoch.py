"""One epoch: its batches in a fresh order (or this rank's share of one), a step on
each, then the validation summary, the model's own figures and the finite check that
guards what is recorded and saved."""

from __future__ import annotations

import time

import torch

from .. import _runstate, distributed, importance
from .. import data as _data
from .hooks import _call
from .sources import _batch_args, _kwargs
from .state import _rng_state


def _epoch_batches(n, batch_size, device):
    """One epoch's index batches: a fresh permutation, or this rank's share of one."""
    if distributed.world_size() == 1:
        return _data.batches(n, batch_size, device=device)
    return distributed.shard(distributed.shared_order(n, device)).split(batch_size)


def _epoch_metrics(module) -> dict:
    """What the model reports of itself after an epoch (an optional hook)."""
    report = getattr(module, "epoch_metrics", None)
    return report() if callable(report) else {}


def _check_finite(params, optim, epoch, checkpoint, saved_epoch) -> None:
    """Refuses to go on (and so to save) with a non-finite parameter or optimizer state."""
    bad = _runstate.non_finite(params.params, optim)
    if bad is not None:
        raise FloatingPointError(
            f"{bad} is not finite after epoch {epoch}: training stopped and this epoch is "
            f"not saved{_runstate.last_good(checkpoint, saved_epoch)}"
        )


def _run_epoch(plan, epoch: int) -> None:
    """Trains epoch ``epoch + 1`` of the plan: every step with its callbacks around it,
    then the validation summary and the checks (``on_epoch_end`` is the loop's)."""
    state, hooked, module, train = plan.state, plan.callbacks, plan.module, plan.train
    began = time.perf_counter()
    state.epoch = epoch + 1
    if module is not None:
        module.train()
    _call(hooked, "on_epoch_begin", state)
    n, batch_size, device = len(train), plan.o.batch_size, train.device
    order = lambda: _epoch_batches(n, batch_size, device)  # noqa: E731
    for index, batch in enumerate(train.batches(order, state.steps_per_epoch)):
        _call(hooked, "on_step_begin", state)
        loss, size = plan.step(state, index, batch)
        _call(hooked, "on_step_end", state, loss, plan.recorder.last, size)
    dynamic = plan.o.binarize == "dynamic"
    with plan.autocast():
        state.validation = _validation_loss(
            plan.objective, plan.pair, module, plan.val, batch_size, plan.recorder, dynamic
        )
    _runstate.check_validation(state.validation, state.epoch, plan.checkpoint, plan.saved["epoch"])
    state.extra["seconds"] = time.perf_counter() - began
    for key, value in _epoch_metrics(module).items():
        state.history.metrics.setdefault(key, []).append(value)
    # nothing non-finite is recorded or saved: the last good checkpoint stays
    _check_finite(plan.params, plan.optim, state.epoch, plan.checkpoint, plan.saved["epoch"])
    if distributed.world_size() > 1 and plan.checkpoint is not None:
        state.extra["rank_rng"] = distributed.gather(_rng_state())  # an exact resume per rank


def _validation_loss(elbo, pair, module, val, batch_size, recorder=None, binarize=False):
    """The validation summary: the loss per point and, where the objective splits,
    its terms, the KL per latent dimension and the number of active units."""
    if val is None:
        return None
    if module is not None:
        module.eval()
    if recorder is not None:
        recorder.detail = True
        recorder.reset_detail()
    generator = torch.Generator().manual_seed(0) if binarize and val.streamed else None
    total, count, terms = 0.0, 0, None
    try:
        with torch.no_grad():
            for batch in val.in_order(batch_size):
                args = _batch_args(val, batch)
                if generator is not None:  # one fixed draw, so epochs are comparable
                    xb = args[0]
                    xb = torch.bernoulli(xb.cpu(), generator=generator).to(xb.device, xb.dtype)
                    args = (xb, *args[1:])
                loss = elbo.differentiable_loss(pair.model, pair.guide, *args, **_kwargs(args))
                total += loss.item()
                count += importance.points(args)
                last = None if recorder is None else recorder.last
                if last is not None:
                    terms = last if terms is None else {k: terms[k] + last[k] for k in last}
    finally:
        if recorder is not None:
            recorder.detail = False
        if module is not None:
            module.train()
    summary = {"loss": total / count}
    if terms is not None:
        values = torch.stack(list(terms.values())).double().cpu().tolist()
        summary.update({k: v / count for k, v in zip(terms, values, strict=True)})
    if recorder is not None and torch.is_tensor(recorder.kl_per_dim):
        summary["kl_per_dim"] = (recorder.kl_per_dim.double() / count).cpu().tolist()
    if recorder is not None and recorder.means:
        variance = torch.cat(recorder.means).double().var(0, unbiased=False)
        summary["active_units"] = int((variance > 0.01).sum())
    return summary
