"""Setting a run up: the parameters to optimize (discovered by probing the objective
on a first batch of each kind), the objective, the optimizer and what each step
differentiates (its reduction), and the plan that the loop runs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from .. import callbacks as _callbacks
from .. import distributed, importance, objectives, schedules
from .._pyro_optim import PyroOptimizer, is_pyro_optimizer
from ..checks import check_parameters
from ..terms import LossTerms
from .compiled import explained
from .history import History
from .hooks import _hooked
from .options import _checked
from .precision import _autocast
from .resume import _CheckpointWriter, _open_run, _run_record
from .sources import (
    _batch_args,
    _check_point_count,
    _dynamic,
    _kwargs,
    _steps_per_epoch,
    _training_source,
    _validation_source,
)
from .state import _decorrelate_ranks, _load_weights, _weights
from .step import _Step, _StepOptions


class _Parameters:
    """Collects the parameters to optimize: the module's, then any ``pyro.param``
    site seen in a parameter trace (a user's own pair), in a stable order."""

    def __init__(self, module):
        self.params = list(module.parameters()) if module is not None else []
        self._seen = {id(p) for p in self.params}
        self.store_names = []

    def add_from_trace(self, trace) -> list:
        new = []
        store = pyro.get_param_store()
        for name, site in trace.nodes.items():
            if site["type"] != "param":
                continue
            p = site["value"].unconstrained()
            if id(p) not in self._seen and p.requires_grad:
                self._seen.add(id(p))
                self.params.append(p)
                self.store_names.append(store.param_name(p) or name)
                new.append(p)
        return new


def default_optimizer(params, lr: float = 1e-3) -> torch.optim.Adam:
    """The optimizer of :func:`fit` when none is given: Adam (Kingma & Ba, 2015) with
    PyTorch's defaults, run by its fused kernel (one kernel for every parameter's
    update) where the parameters allow it: floating point, on the CPU or CUDA. The
    update is Adam's, to rounding; the step costs a third of the per-tensor loop's on
    a small network. Elsewhere, or on a PyTorch without the fused kernel, it is the
    per-tensor Adam.

    :param params: the parameters (or parameter groups).
    :param float lr: the learning rate.
    """
    params = list(params)
    tensors = [
        p for group in params for p in (group["params"] if isinstance(group, dict) else [group])
    ]
    if tensors and all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass  # a PyTorch without the fused kernel for these tensors
    return torch.optim.Adam(params, lr=lr)


def _reduction(reduction, optimizer) -> str:
    if reduction is None:
        return "sum" if is_pyro_optimizer(optimizer) else "mean"
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return reduction


def _optimizer(optimizer, params, lr, lr_schedule):
    """The optimizer: Adam by default, a factory's, or a pyro.optim one driven as SVI does."""
    if optimizer is None:
        return default_optimizer(params, lr=1e-3 if lr is None else lr)
    if is_pyro_optimizer(optimizer):
        if lr is not None:
            raise ValueError(
                "lr= sets the default optimizer's learning rate; a pyro.optim optimizer "
                "carries its own (in its optim_args)"
            )
        if lr_schedule is not None:
            raise ValueError(
                "lr_schedule= drives a PyTorch optimizer; with a pyro.optim optimizer use a "
                "pyro.optim scheduler (pyro.optim.ExponentialLR({...}), stepped every epoch)"
            )
        return PyroOptimizer(optimizer, params)
    if not callable(optimizer):
        raise TypeError(
            "optimizer must be a callable params -> torch.optim.Optimizer or a pyro.optim "
            f"optimizer, got {type(optimizer).__name__}"
        )
    return optimizer(params)


@dataclass
class _Plan:
    """Everything a run needs, built once by :func:`_plan` and read by the loop: the
    checked options ``o``, the data sources, the objective and the loss of a step, the
    parameters and optimizer, the run directory, the callbacks' state and the
    callbacks themselves."""

    o: object
    pair: object
    module: object
    train: object
    val: object
    steps_per_epoch: int
    target_beta: object = None
    objective: object = None
    recorder: object = None
    autocast: object = None
    params: object = None
    optim: object = None
    loss_of: object = None
    run: dict | None = None
    checkpoint: object = None
    saved: dict = field(default_factory=lambda: {"epoch": None})
    run_lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    state: object = None
    callbacks: list = field(default_factory=list)
    step: object = None
    compiled: object = None


def _build_objective(plan) -> None:
    """Probes the objective on a first batch of each kind to discover every parameter
    (initializing any ``pyro.param``), then builds the optimizer and the step's loss."""
    o, train = plan.o, plan.train
    # Discover every parameter (and initialize any pyro.param) before building the optimizer.
    params = _Parameters(plan.module)
    probe = _dynamic(_batch_args(train, train.head(o.batch_size)), o.binarize, o.observed)
    others = []
    if getattr(train, "program", False):
        _check_point_count(plan.pair, probe)
        others = [_dynamic(p, o.binarize, o.observed) for p in train.probes()]
    elbo, pair = objectives.for_pair(o.loss, o.num_particles, plan.pair, probe, o.gradient, others)
    objective = elbo
    if isinstance(o.kl_schedule, schedules.Capacity):
        if isinstance(elbo, TraceEnum_ELBO) or getattr(elbo, "enumerate", False):
            raise ValueError("schedules.Capacity needs a model without enumerated sites")
        objective = o.kl_schedule
    plan.pair, plan.objective, plan.params = pair, objective, params
    plan.recorder = LossTerms(getattr(objective, "elbo", objective))
    plan.autocast = autocast = _autocast(o.precision, train.device, plan.module)
    # the probes leave the random stream where it was: the first step draws what an
    # SVI.step on the first batch would draw. Batches of each kind are probed (an
    # unlabelled batch reaches the classifier that a labelled one does not).
    losses = []
    for first in (probe, *others):
        with poutine.trace(param_only=True) as capture, autocast(), importance.preserve_rng(first):
            losses.append(_probe_loss(plan, first))
        params.add_from_trace(capture.trace)
    probe_loss = sum(losses)
    if plan.compiled is not None:  # the compiled networks' loss is the eager one's
        with plan.compiled.eager(), autocast(), importance.preserve_rng(probe):
            plan.compiled.compare(_probe_loss(plan, probe).detach(), losses[0].detach())
    if not params.params:
        raise ValueError("the model and guide have no parameters to train")
    grads = check_parameters(probe_loss, params.params, params.store_names, plan.module)
    plan.optim = _optimizer(o.optimizer, params.params, o.lr, o.lr_schedule)
    plan.loss_of = _loss_function(plan, any(g is None for g in grads))


def _probe_loss(plan, args):
    """The objective's loss on a probe batch."""
    objective, pair = plan.objective, plan.pair
    return objective.differentiable_loss(pair.model, pair.guide, *args, **_kwargs(args))


def _loss_function(plan, unused: bool):
    """The loss of one step's batch: the objective's, or under DistributedDataParallel
    (which averages the gradients of the ranks' per-point losses) its wrapped form."""
    objective, pair = plan.objective, plan.pair
    if distributed.world_size() > 1:
        return distributed.wrap_loss(plan.module, objective, pair.model, pair.guide, unused)

    def loss_of(*args, **kwargs):
        return objective.differentiable_loss(pair.model, pair.guide, *args, **kwargs)

    if plan.compiled is None:
        return loss_of

    def compiled_loss_of(*args, **kwargs):
        with explained(plan.compiled):  # a recompilation that fails is said in words
            return loss_of(*args, **kwargs)

    return compiled_loss_of


def _plan(options: dict) -> _Plan:
    """Sets a run up from ``fit``'s keywords: checks them, seeds the random streams,
    builds the data sources, the objective and the optimizer, opens the run directory
    (restoring its checkpoint on resume), and assembles the step and the callbacks."""
    o = _checked(options)
    if o.seed is not None:
        pyro.set_rng_seed(o.seed)
    _decorrelate_ranks()
    o.reduction = _reduction(o.reduction, o.optimizer)
    train = _training_source(o)
    plan = _Plan(
        o=o,
        pair=o.pair,
        module=o.module,
        train=train,
        val=_validation_source(o),
        steps_per_epoch=_steps_per_epoch(train, o.batch_size),
        target_beta=getattr(o.module, "beta", None),
        compiled=o.compiled,
    )
    with explained(plan.compiled):  # the first calls compile: their errors in words
        _build_objective(plan)
    start_epoch, step, history = _open_checkpoint_dir(plan)
    module, params = plan.module, plan.params
    plan.state = _callbacks.TrainingState(
        module=module,
        optimizer=plan.optim,
        history=history,
        epochs=o.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        epoch=start_epoch,
        step=step,
        is_writer=distributed.rank() == 0,
        checkpoint_dir=o.checkpoint_dir,
        has_validation=plan.val is not None,
        state_dict=lambda: _weights(module, params),
        load_state_dict=lambda weights: _load_weights(weights, module),
    )
    plan.state.write_checkpoint = _CheckpointWriter(plan)
    plan.step = _Step(plan, _StepOptions.of(o))
    plan.callbacks = _hooked(plan)
    return plan


def _open_checkpoint_dir(plan) -> tuple:
    """With ``checkpoint_dir=``: the run's record, the folder locked and, on resume, the
    checkpoint restored; returns the epoch and step to start from and the History."""
    o = plan.o
    if o.checkpoint_dir is None:
        return 0, 0, History()
    plan.run = _run_record(o, plan.train, plan.optim)
    plan.checkpoint, restored = _open_run(
        o.checkpoint_dir,
        o.resume,
        o.epochs,
        plan.run,
        plan.run_lock,
        distributed.rank() == 0,
        plan.module,
        plan.params,
        plan.optim,
        o.lr is not None or o.optimizer is not None,
        plan.train.device,
    )
    if restored is None:
        return 0, 0, History()
    start_epoch, step, history, every_rank = restored
    plan.saved["epoch"] = start_epoch
    if not every_rank:  # a checkpoint without the other ranks' random streams
        _decorrelate_ranks()
    return start_epoch, step, history
