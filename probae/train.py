r"""Training: :func:`fit` runs stochastic variational inference on any model/guide pair.

Each step draws a minibatch (sliced from tensors already on the model's device, or
streamed from a torch Dataset or DataLoader, :mod:`probae.batches`), evaluates a
Pyro ELBO's differentiable loss, and takes a PyTorch optimizer step:

- ``loss="elbo"``: :class:`~pyro.infer.Trace_ELBO`, the reparameterized Monte Carlo ELBO;
- ``loss="meanfield"``: :class:`~pyro.infer.TraceMeanField_ELBO`, with the KL term in
  closed form where one exists;
- ``loss="iwae"``: the importance-weighted bound of Burda et al. (2016), Pyro's
  :class:`~pyro.infer.RenyiELBO` with :math:`\alpha = 0` and ``num_particles``
  vectorized particles (:class:`probae.objectives.IWAE`).

A model with discrete sites marked ``infer={"enumerate": "parallel"}`` (a
:class:`~probae.priors.GaussianMixture` with ``enumerate=True``) is trained with
:class:`~pyro.infer.TraceEnum_ELBO` for ``loss="elbo"``, and with those sites
summed out of every importance weight for ``loss="iwae"``.

This is Pyro's SVI with module-local parameters: the built-in models keep their
parameters in their own :class:`torch.nn.Module` (never in Pyro's global param
store, so two models in one process never share parameters), while any
``pyro.param``/``pyro.module`` parameter of a user's own pair is collected from a
parameter trace on every step, exactly as :class:`pyro.infer.SVI` does.
The optimizer is a PyTorch optimizer, so a distributed wrapper
(DistributedDataParallel) can wrap the same loop.

Around the steps the loop calls callbacks (:mod:`probae.callbacks`: the History,
checkpoints, the progress bar, early stopping, TensorBoard) and applies schedules
(:mod:`probae.schedules`: learning rate, KL warm-up, capacity); the loss's terms
(:mod:`probae.terms`) are read off the traces the ELBO builds.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from . import (
    _progress,
    _runstate,
    _threads,
    _validate,
    batches,
    distributed,
    importance,
    objectives,
    rundir,
    saving,
    schedules,
)
from . import callbacks as _callbacks
from . import data as _data
from ._common import as_pair, device_of, positive_int, prepare
from ._pyro_optim import PyroOptimizer, is_pyro_optimizer
from .checks import check_parameters
from .saving import CHECKPOINT_NAME, model_config, write_checkpoint
from .saving import read_checkpoint as load_checkpoint
from .terms import LossTerms

__all__ = ["History", "fit", "default_optimizer", "load_checkpoint", "CHECKPOINT_NAME"]

BINARIZE = (None, "static", "dynamic")
OBSERVATIONS = ("x", "c")


@dataclass
class History:
    """Per-epoch record of a training run (losses are per data point, in nats).

    ``distortion + rate + penalty`` is the training loss (see :mod:`probae.terms`;
    None where the objective does not split); the ``val_`` entries are the same on
    the validation data, ``kl_per_dim`` its closed-form KL per latent dimension
    (None without a closed form) and ``active_units`` its number of dimensions
    whose posterior mean varies across points by more than 0.01.
    """

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    beta: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    # the loss's terms per point (probae.terms): training means, then validation
    distortion: list = field(default_factory=list)
    rate: list = field(default_factory=list)
    penalty: list = field(default_factory=list)
    val_distortion: list = field(default_factory=list)
    val_rate: list = field(default_factory=list)
    val_penalty: list = field(default_factory=list)
    kl_per_dim: list = field(default_factory=list)  # validation, per latent dimension
    active_units: list = field(default_factory=list)  # validation, Burda et al. (2016)
    lr: list = field(default_factory=list)
    #: per-epoch figures a model reports of itself (``model.epoch_metrics()``, e.g. a
    #: VQ-VAE's codebook perplexity), by name
    metrics: dict = field(default_factory=dict)

    def append(self, **row) -> None:
        for key, value in row.items():
            getattr(self, key).append(value)

    def __len__(self) -> int:
        return len(self.epoch)

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=1))

    def to_csv(self, path) -> None:
        rows = self.as_dict()
        rows.update(rows.pop("metrics"))
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(rows))
            # a checkpoint of an older run may lack the newer columns
            columns = [v if len(v) == len(self) else [None] * len(self) for v in rows.values()]
            writer.writerows(zip(*columns, strict=True))


# -- checkpoints ---------------------------------------------------------------------


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- the loop ------------------------------------------------------------------------


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


def fit(
    model,
    data,
    epochs: int = 10,
    batch_size: int = 128,
    loss: str = "elbo",
    num_particles: int = 1,
    lr: float | None = None,
    optimizer=None,
    binarize: str | None = None,
    c=None,
    validation=None,
    validation_c=None,
    beta_warmup: int = 0,
    checkpoint_dir=None,
    resume: bool = False,
    seed: int | None = None,
    progress: bool | None = None,
    validate: bool = False,
    condition=None,
    observation: str = "x",
    *,
    gradient: str | None = None,
    callbacks=None,
    early_stopping=None,
    lr_schedule=None,
    kl_schedule=None,
    capacity=None,
    clip_grad_norm: float | None = None,
    precision: str | None = None,
    num_workers: int = 0,
    in_memory: bool | None = None,
    check_data: bool = True,
    reduction: str | None = None,
    threads: int | None = None,
) -> History:
    """Trains a model/guide pair by stochastic variational inference.

    :param model: a probae model, or a user's own ``(model, guide)`` pair of callables
        written for ``SVI.step``: taking ``(x)`` or ``(x, c)`` when ``data`` is a tensor
        or data set, or whatever arguments its own batches hold.
    :param data: a :class:`~probae.data.Dataset`, a tensor of shape ``(N, ...)``
        (``(N,)``: N scalar points), a map-style :class:`torch.utils.data.Dataset`
        (items ``x`` or ``(x, y)``), a :class:`~torch.utils.data.DataLoader`, or any
        re-iterable of the pair's own batches (a list, a DataLoader with its own
        ``collate_fn``, :func:`probae.batches.alternate` of labelled and unlabelled
        loaders) whose items are tuples (positional arguments), dicts (keyword
        arguments) or tensors, passed to model and guide as
        ``SVI.step(*args, **kwargs)`` passes them (see :mod:`probae.batches`).
    :param int epochs: total epochs (with ``resume=True``, counted from the run's start).
    :param int batch_size: points per step (a DataLoader keeps its own).
    :param loss: ``"elbo"``, ``"meanfield"``, ``"iwae"``; ``"miwae"``, ``"piwae"``,
        ``"ciwae"`` (Rainforth et al. 2018, see :mod:`probae.objectives`); or any
        :class:`pyro.infer.ELBO` instance (``TraceEnum_ELBO(max_plate_nesting=1)``,
        ``RenyiELBO(alpha=0.5)``, ...). A pair with sites marked for enumeration gets
        :class:`~pyro.infer.TraceEnum_ELBO` for ``"elbo"``; see
        :func:`probae.objectives.objective_for` for what is checked on the first batch.
    :param int num_particles: particles per point (vectorized); K for ``"iwae"``.
    :param str gradient: the gradient estimator of ``loss="iwae"``: ``"standard"``
        (default), ``"stl"`` (sticking the landing) or ``"dreg"`` (doubly reparameterized).
    :param float lr: learning rate of the default Adam optimizer
        (:func:`default_optimizer`; default: 1e-3; when
        resuming, the run's own). A learning rate given on resume replaces the run's, so a
        run that diverged can continue from its last good checkpoint at a lower one.
    :param optimizer: a callable ``params -> torch.optim.Optimizer`` replacing Adam, or a
        :mod:`pyro.optim` optimizer (``pyro.optim.ClippedAdam({...})``, a
        ``PyroLRScheduler``, stepped after every epoch), driven as ``SVI`` drives it: one
        PyTorch optimizer per parameter, each clipped on its own.
    :param str reduction: what each step differentiates: ``"mean"``, the loss per data
        point of the batch (the default with a PyTorch optimizer: the learning rate does
        not depend on the batch size), or ``"sum"``, the batch's whole loss as
        :class:`pyro.infer.SVI` differentiates it (the default with a :mod:`pyro.optim`
        optimizer, so a program trains under ``fit`` as under its own ``SVI`` loop).
        A subsampled plate's loss is scaled as Pyro scales it either way.
    :param str binarize: ``"dynamic"`` (a fresh Bernoulli draw of every batch, for
        Bernoulli likelihoods on grey levels), ``"static"`` (one draw, seeded; in-memory
        data only) or None.
    :param c: conditions, one row per data point (conditional models).
    :param validation: data scored after every epoch (same loss, no gradient), in any
        form ``data`` takes; the History then holds its loss terms, KL per latent
        dimension and active units.
    :param validation_c: conditions of the validation data.
    :param int beta_warmup: epochs over which beta rises linearly to the model's
        beta (KL annealing, Bowman et al. 2016); 0 for none. Short for
        ``kl_schedule=schedules.KLWarmup(beta_warmup)``.
    :param checkpoint_dir: folder for ``checkpoint.pt``, written atomically after
        every epoch (model, optimizer, RNG states, history, and a record of the run: a
        fingerprint of the data and the options that define it). The folder is locked
        while training (:mod:`probae.rundir`): a second process training into it is
        refused. A checkpoint is written only when every parameter and the optimizer's
        state are finite, so the one on disk is always the last good one. A folder that
        already holds a run is never replaced: resume it, or choose another.
    :param bool resume: continue from ``checkpoint_dir``'s checkpoint if there is one.
        The data, the model's options, ``loss``, ``num_particles``, ``batch_size``,
        ``binarize``, ``beta_warmup``, ``seed``, ``reduction``, ``gradient``, ``kl_schedule`` (or
        ``capacity``), ``lr_schedule``, ``clip_grad_norm``, ``precision`` and the
        optimizer's class must be the run's (an error names the one that differs);
        ``epochs`` (no fewer than those done), ``lr``, ``validation``, ``progress``,
        ``validate``, ``check_data``, ``num_workers``, ``in_memory``, ``callbacks`` and
        ``early_stopping`` may change.
    :param int seed: seeds PyTorch, NumPy and Python at the start.
    :param bool progress: show progress (True or None): a bar in a terminal or a
        notebook, elsewhere (a log file, CI) a plain line per epoch, and every 10 s
        within a long one, with the loss, rate, distortion and points per second;
        False shows nothing.
    :param bool validate: run Pyro's distribution-argument checks at every step. The data
        is checked once up front either way, and a non-finite loss always stops training.
    :param condition: what the condition c is, instead of ``c=``: ``"label"`` (one-hot
        rows of ``data.y``, as many classes as the model's ``c_shape``), the name of a
        tensor field of the data, or a tensor. Without either, a data set that carries
        its own ``c`` (:func:`probae.data.quadrants`) supplies it.
    :param str observation: which argument of ``model(x, c)`` is the observed data that
        ``binarize`` draws and checks: ``"x"`` (the default) or ``"c"``, for pairs whose
        first argument is the condition (Pyro's CVAE ``model(xs, ys)`` scores ``ys``).
    :param list callbacks: :class:`probae.callbacks.Callback` objects called around
        every step and epoch (after the History, before checkpointing).
    :param early_stopping: a patience in epochs, or a
        :class:`probae.callbacks.EarlyStopping`: stop when the validation loss stops
        improving and keep the best epoch's weights.
    :param lr_schedule: ``"cosine"``, ``"step"``, ``"exponential"``, ``"warmup"``,
        ``"warmup-cosine"``, a :class:`probae.schedules.Multiplier`, or a factory
        ``optimizer -> torch.optim.lr_scheduler.LRScheduler`` (stepped once per epoch).
    :param capacity: a :class:`probae.schedules.Capacity`, the controlled-capacity
        objective of Burgess et al. (2018); short for ``kl_schedule=capacity``.
    :param kl_schedule: a :class:`probae.schedules.KLWarmup` or
        :class:`probae.schedules.Capacity` (which replaces the loss).
    :param float clip_grad_norm: clip the gradients' total norm to this value.
    :param str precision: ``"bf16"``: the networks run under bfloat16 autocast, their
        outputs and every log-density and sum in float32; None for float32.
    :param int num_workers: DataLoader workers for streamed data.
    :param bool in_memory: for a torch Dataset: read it into memory once (True),
        stream it (False), or hold it in memory when it fits (None).
    :param bool check_data: check streamed batches (finite values in the likelihood's
        support) as they arrive; False when the data is known to be valid.
    :param int threads: CPU threads for the run: None runs a small network (parameters
        times rows per step below ``2**24``) on one thread, which is faster than
        PyTorch's default of one per core, and leaves PyTorch's setting otherwise (see
        :mod:`probae._threads`); an integer sets the count. The caller's setting is
        restored afterwards.
    :returns: the :class:`History` of the whole run.
    """
    options = dict(locals())
    del options["threads"]
    module = model if isinstance(model, torch.nn.Module) else as_pair(model).module
    rows = math.prod(v for v in (batch_size, num_particles) if isinstance(v, int) and v > 0)
    with pyro.validation_enabled(validate), _threads.for_call(threads, module, rows):
        return _fit(**options)


def _fit(
    model,
    data,
    epochs,
    batch_size,
    loss,
    num_particles,
    gradient,
    lr,
    optimizer,
    binarize,
    c,
    validation,
    validation_c,
    beta_warmup,
    checkpoint_dir,
    resume,
    seed,
    progress,
    validate,
    condition,
    observation,
    callbacks,
    early_stopping,
    lr_schedule,
    kl_schedule,
    capacity,
    clip_grad_norm,
    precision,
    num_workers,
    in_memory,
    check_data,
    reduction,
):
    pair = as_pair(model)
    module = pair.module
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    objectives.check_loss(loss)
    if binarize not in BINARIZE:
        raise ValueError(f"binarize must be one of {list(BINARIZE)}, got {binarize!r}")
    if observation not in OBSERVATIONS:
        raise ValueError(f"observation must be 'x' or 'c', got {observation!r}")
    observed = OBSERVATIONS.index(observation)
    _progress.check(progress)
    num_particles = _runstate.check_particles(num_particles)
    lr, seed, beta_warmup = _runstate.check_options(lr, seed, beta_warmup)
    if beta_warmup and not hasattr(module, "beta"):
        raise ValueError("beta_warmup needs a model with a beta attribute (a probae model)")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=")
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
    lr_schedule = schedules.learning_rate(lr_schedule)
    if clip_grad_norm is not None and not (
        isinstance(clip_grad_norm, (int, float)) and clip_grad_norm > 0
    ):
        raise ValueError(f"clip_grad_norm must be a positive number, got {clip_grad_norm!r}")
    extra_callbacks = _callback_list(callbacks, early_stopping)
    if seed is not None:
        pyro.set_rng_seed(seed)
    world = distributed.world_size()
    _decorrelate_ranks()
    train = None

    c_shape = getattr(module, "c_shape", None)
    x_shape = getattr(module, "x_shape", None)
    reduction = _reduction(reduction, optimizer)
    if batches.is_program_data(data, module):
        train = _program_source(data, pair, c, condition, binarize, "data")
    else:
        data = batches.materialize(data, in_memory, num_workers, x_shape=x_shape)
    if train is not None:
        pass
    elif batches.is_streamable(data):
        if binarize == "static":
            raise ValueError(
                "binarize='static' needs in-memory data (one seeded draw of the whole set); "
                "use binarize='dynamic' or binarize the data first"
            )
        if observed:
            raise ValueError("observation='c' needs in-memory data")
        train = batches.streamed(
            data, module, c, condition, "data", num_workers, check_data and binarize is None
        )
    else:
        c = _data.resolve_condition(data, condition, c, c_shape, "data")
        if observed and c is None:
            raise ValueError("observation='c' needs a condition c (c= or condition=)")
        train = batches.InMemory(*_training_data(data, module, c, binarize, "data", observed))
    val = None
    if validation is not None and batches.is_program_data(validation, module):
        val = _program_source(validation, pair, validation_c, None, binarize, "validation")
    elif validation is not None:
        validation = batches.materialize(validation, in_memory, num_workers, x_shape=x_shape)
        if batches.is_streamable(validation):
            val = batches.streamed(
                validation,
                module,
                validation_c,
                None if torch.is_tensor(condition) else condition,
                "validation",
                num_workers,
                check_data and binarize is None,
            )
        else:
            if validation_c is None and not torch.is_tensor(condition):
                validation_c = _data.resolve_condition(
                    validation, condition, None, c_shape, "validation"
                )
            val = list(
                _training_data(validation, module, validation_c, binarize, "validation", observed)
            )
            if binarize == "dynamic":  # one fixed draw, so epochs are comparable
                val[observed] = _data.binarize(val[observed], seed=0)
            val = batches.InMemory(*val)
    target_beta = getattr(module, "beta", None)
    device = train.device
    n = len(train)
    if getattr(train, "program", False):
        steps_per_epoch = len(train)  # its batches (0: not known ahead)
    elif train.streamed and train.loader is not None:
        steps_per_epoch = len(train.loader)
    else:
        steps_per_epoch = math.ceil(math.ceil(n / world) / batch_size)

    # Discover every parameter (and initialize any pyro.param) before building the optimizer.
    params = _Parameters(module)
    probe = _dynamic(_batch_args(train, train.head(batch_size)), binarize, observed)
    others = []
    if getattr(train, "program", False):
        _check_point_count(pair, probe)
        others = [_dynamic(p, binarize, observed) for p in train.probes()]
    elbo, pair = objectives.for_pair(loss, num_particles, pair, probe, gradient, others)
    objective = elbo
    if isinstance(kl_schedule, schedules.Capacity):
        if isinstance(elbo, TraceEnum_ELBO) or getattr(elbo, "enumerate", False):
            raise ValueError("schedules.Capacity needs a model without enumerated sites")
        objective = kl_schedule
    recorder = LossTerms(getattr(objective, "elbo", objective))
    autocast = _autocast(precision, device, module)
    # the probes leave the random stream where it was: the first step draws what an
    # SVI.step on the first batch would draw. Batches of each kind are probed (an
    # unlabelled batch reaches the classifier that a labelled one does not).
    probe_loss = 0.0
    for first in (probe, *others):
        with poutine.trace(param_only=True) as capture, autocast(), importance.preserve_rng(first):
            loss_now = objective.differentiable_loss(
                pair.model, pair.guide, *first, **_kwargs(first)
            )
        probe_loss = probe_loss + loss_now
        params.add_from_trace(capture.trace)
    if not params.params:
        raise ValueError("the model and guide have no parameters to train")
    grads = check_parameters(probe_loss, params.params, params.store_names, module)
    optim = _optimizer(optimizer, params.params, lr, lr_schedule)
    if world > 1:
        # DistributedDataParallel averages the gradients of the ranks' per-point losses.
        unused = any(g is None for g in grads)
        loss_of = distributed.wrap_loss(module, objective, pair.model, pair.guide, unused)
    else:

        def loss_of(*args, **kwargs):
            return objective.differentiable_loss(pair.model, pair.guide, *args, **kwargs)

    history = History()
    start_epoch, step = 0, 0
    checkpoint, run, saved = None, None, {"epoch": None}
    run_lock = contextlib.ExitStack()
    if checkpoint_dir is not None:
        run = _runstate.record(
            _fingerprint(train),
            lr,
            optimizer,
            loss=loss if isinstance(loss, str) else type(loss).__name__,
            num_particles=num_particles,
            batch_size=batch_size,
            binarize=binarize,
            beta_warmup=beta_warmup,
            seed=seed,
            reduction=reduction,
            gradient=gradient,
            kl_schedule=kl_schedule,
            lr_schedule=lr_schedule,
            clip_grad_norm=clip_grad_norm,
            precision=_runstate.precision_name(precision),
            optimizer=_runstate.optimizer_kind(optim),
            world_size=world,
        )
        checkpoint, restored = _open_run(
            checkpoint_dir,
            resume,
            epochs,
            run,
            run_lock,
            distributed.rank() == 0,
            module,
            params,
            optim,
            lr is not None or optimizer is not None,
            device,
        )
        if restored is not None:
            start_epoch, step, history, every_rank = restored
            saved["epoch"] = start_epoch
            if not every_rank:  # a checkpoint without the other ranks' random streams
                _decorrelate_ranks()
    is_writer = distributed.rank() == 0

    state = _callbacks.TrainingState(
        module=module,
        optimizer=optim,
        history=history,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        epoch=start_epoch,
        step=step,
        is_writer=is_writer,
        checkpoint_dir=checkpoint_dir,
        has_validation=val is not None,
        state_dict=lambda: _weights(module, params),
        load_state_dict=lambda weights: _load_weights(weights, module),
    )

    def save(path):
        state_now = _checkpoint_state(
            state.epoch, state.step, module, params, optim, history, target_beta
        )
        if world > 1:  # every rank's random streams, gathered at the epoch's end
            state_now["rank_rng"] = state.extra.get("rank_rng")
        write_checkpoint({**state_now, "run": run}, path)
        if checkpoint is not None and Path(path) == checkpoint:
            saved["epoch"] = state.epoch

    state.write_checkpoint = save
    hooked = [_callbacks.HistoryRecorder(), *extra_callbacks]
    if checkpoint is not None:
        hooked.append(_callbacks.Checkpoint(checkpoint_dir))
    bar = _callbacks.ProgressBar(progress)
    hooked.append(bar)
    scheduled = [s for s in (lr_schedule, kl_schedule) if s is not None]
    if isinstance(optim, PyroOptimizer):
        hooked.insert(0, _PyroSchedulerStep(optim))
    try:
        _loop(
            state, hooked, scheduled, train, val, objective, pair, loss_of, params, optim,
            recorder, autocast, binarize, batch_size, clip_grad_norm, checkpoint, check_data,
            observed, saved, reduction,
        )  # fmt: skip
    finally:
        run_lock.close()
    return history


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


def _loop(
    state, hooked, scheduled, train, val, objective, pair, loss_of, params, optim,
    recorder, autocast, binarize, batch_size, clip_grad_norm, checkpoint, check_data,
    observed, saved, reduction,
):  # fmt: skip
    module = state.module
    world = distributed.world_size()
    device, n = train.device, len(train)
    for schedule in scheduled:
        schedule.begin(state)
    try:
        _call(hooked, "on_train_begin", state)
        for epoch in range(state.epoch, state.epochs):
            began = time.perf_counter()
            state.epoch = epoch + 1
            if module is not None:
                module.train()
            _call(hooked, "on_epoch_begin", state)
            order = lambda: _epoch_batches(n, batch_size, device)  # noqa: E731
            for index, batch in enumerate(train.batches(order, state.steps_per_epoch)):
                for schedule in scheduled:
                    schedule.apply(state)
                args = _batch_args(train, batch)
                count = importance.points(args)
                if binarize is not None and train.streamed:
                    if check_data and _outside_unit_interval(args[observed]):
                        raise ValueError(f"binarize={binarize!r} needs data in [0, 1]")
                args = _dynamic(args, binarize, observed)
                with poutine.trace(param_only=True) as capture, autocast():
                    batch_loss = loss_of(*args, **_kwargs(args))
                value = batch_loss.item()
                if world > 1:  # every rank sees the same total, so all stop together
                    value = distributed.all_sum(value, device)
                if not math.isfinite(value):
                    where = _runstate.last_good(checkpoint, saved["epoch"])
                    raise FloatingPointError(
                        f"non-finite loss ({value}) at epoch {epoch + 1}, step {index + 1}: "
                        f"training stopped before the update{where}"
                    )
                new = params.add_from_trace(capture.trace)
                if new:
                    optim.add_param_group({"params": new})
                optim.zero_grad(set_to_none=True)
                (batch_loss / count if reduction == "mean" else batch_loss).backward()
                if clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params.params, clip_grad_norm)
                optim.step()
                state.step += 1
                _call(hooked, "on_step_end", state, value, recorder.last, count * world)
            with autocast():
                state.validation = _validation_loss(
                    objective, pair, module, val, batch_size, recorder, binarize == "dynamic"
                )
            _runstate.check_validation(state.validation, state.epoch, checkpoint, saved["epoch"])
            state.extra["seconds"] = time.perf_counter() - began
            for key, value in _epoch_metrics(module).items():
                state.history.metrics.setdefault(key, []).append(value)
            # nothing non-finite is recorded or saved: the last good checkpoint stays
            _check_finite(params, optim, state.epoch, checkpoint, saved["epoch"])
            if world > 1 and checkpoint is not None:  # for a resume that is exact on every rank
                state.extra["rank_rng"] = distributed.gather(_rng_state())
            _call(hooked, "on_epoch_end", state)
            distributed.barrier()
            if state.stop:
                break
        for schedule in scheduled:
            schedule.end(state)
        _call(hooked, "on_train_end", state)
    except BaseException:
        for schedule in scheduled:
            schedule.end(state)
        hooked[-1].on_train_end(state)  # the progress bar
        raise


def _call(hooked, name, *args):
    for callback in hooked:
        getattr(callback, name)(*args)


def _callback_list(callbacks, early_stopping) -> list:
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


def _weights(module, params) -> dict:
    """A copy of the trained weights: the module's and those in Pyro's param store."""
    store = pyro.get_param_store()
    return {
        "module": {k: v.detach().clone() for k, v in module.state_dict().items()}
        if module is not None
        else {},
        "param_store": {
            name: store.get_param(name).unconstrained().detach().clone()
            for name in params.store_names
        },
    }


def _load_weights(weights, module) -> None:
    if module is not None:
        module.load_state_dict(weights["module"])
    store = pyro.get_param_store()
    with torch.no_grad():
        for name, value in weights["param_store"].items():
            store.get_param(name).unconstrained().copy_(value)


def _float32_outputs(module, inputs, output):
    """Network outputs back to float32, so every density and sum after them is float32."""
    if torch.is_tensor(output):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, tuple):
        return tuple(_float32_outputs(module, inputs, o) for o in output)
    return output


def _autocast(precision, device, module):
    """A context factory for the loss under ``precision``: bfloat16 autocast, with the
    module's children (its networks) returning float32 while it is entered."""
    if precision in (None, "fp32", "float32"):
        return contextlib.nullcontext
    if precision not in ("bf16", "bfloat16"):
        raise ValueError(f"precision must be None or 'bf16', got {precision!r}")
    if module is None:
        raise ValueError("precision='bf16' needs a model that is a torch.nn.Module")
    if device.type == "cuda":
        try:
            supported = torch.cuda.is_bf16_supported()
        except Exception:  # an emulated or partial CUDA
            supported = False
        if not supported:
            raise ValueError(f"precision='bf16' is not supported on {device}")
    elif device.type != "cpu":
        raise ValueError(f"precision='bf16' is supported on CPU and CUDA, not {device.type}")

    @contextlib.contextmanager
    def bf16():
        hooks = [child.register_forward_hook(_float32_outputs) for child in module.children()]
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        finally:
            for handle in hooks:
                handle.remove()

    return bf16


def _open_run(
    folder, resume, epochs, run, run_lock, is_writer, module, params, optim, new_lr, device
):
    """Locks the run directory and, when resuming, restores its checkpoint after
    checking that it belongs to this run; returns ``(checkpoint, restored)``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"checkpoint_dir {str(folder)!r} exists and is not a folder")
    checkpoint = folder / CHECKPOINT_NAME
    if is_writer:
        run_lock.enter_context(rundir.lock(folder))
        saving.remove_orphans(folder)  # temporary files of writers killed mid-write
    else:
        folder.mkdir(parents=True, exist_ok=True)
    if not checkpoint.exists():
        return checkpoint, None
    if not resume:
        run_lock.close()
        raise FileExistsError(
            f"checkpoint_dir {str(folder)!r} already holds a run ({CHECKPOINT_NAME}); pass "
            "resume=True to continue it, or choose another folder"
        )
    try:
        state = load_checkpoint(checkpoint, map_location=device)
        _runstate.check_resume(
            state.get("run"), run, state.get("model"), model_config(module), checkpoint
        )
        done = state["epoch"]
        if epochs < done:
            raise ValueError(
                f"epochs={epochs} is fewer than the {done} the run in {str(folder)!r} has "
                f"already trained; pass epochs={done} or more"
            )
        fresh_lr = [group["lr"] for group in optim.param_groups]
        restored = _restore(checkpoint, module, params, optim, state)
        if new_lr:  # the learning rate given now, not the run's
            for group, value in zip(optim.param_groups, fresh_lr, strict=False):
                group["lr"] = value
    except BaseException:
        run_lock.close()
        raise
    return checkpoint, restored


class _PyroSchedulerStep(_callbacks.Callback):
    """Steps a pyro.optim scheduler after every epoch."""

    def __init__(self, optim):
        self.optim = optim

    def on_epoch_end(self, state):
        self.optim.end_epoch()


def _fingerprint(train) -> str:
    """The training data's fingerprint, for resume checks: every value of in-memory data;
    the size and the first batch of streamed data (reading it all would cost an epoch)."""
    if getattr(train, "program", False):
        first = train.head()
        tensors = [v for v in (*first, *first.kwargs.values()) if isinstance(v, torch.Tensor)]
        return f"{len(train)}:" + "".join(_runstate.fingerprint(t) for t in tensors)
    if not train.streamed:
        return _runstate.fingerprint(train.x, train.c)
    x, c = train.head(64)
    return f"{len(train)}:" + _runstate.fingerprint(x, c)


def _check_finite(params, optim, epoch, checkpoint, saved_epoch) -> None:
    """Refuses to go on (and so to save) with a non-finite parameter or optimizer state."""
    bad = _runstate.non_finite(params.params, optim)
    if bad is not None:
        raise FloatingPointError(
            f"{bad} is not finite after epoch {epoch}: training stopped and this epoch is "
            f"not saved{_runstate.last_good(checkpoint, saved_epoch)}"
        )


def _epoch_metrics(module) -> dict:
    """What the model reports of itself after an epoch (an optional hook)."""
    report = getattr(module, "epoch_metrics", None)
    return report() if callable(report) else {}


def _decorrelate_ranks():
    """Ranks share the epoch order (drawn on rank 0) but not their Monte Carlo noise."""
    rank = distributed.rank()
    if rank > 0:
        pyro.set_rng_seed((torch.initial_seed() + 104729 * rank) % 2**63)


def _epoch_batches(n, batch_size, device):
    """One epoch's index batches: a fresh permutation, or this rank's share of one."""
    if distributed.world_size() == 1:
        return _data.batches(n, batch_size, device=device)
    return distributed.shard(distributed.shared_order(n, device)).split(batch_size)


def _args(x, c):
    return (x,) if c is None else (x, c)


def _batch_args(source, batch):
    """A batch's arguments: a program's own, or ``(x,)`` / ``(x, c)``."""
    return batch if getattr(source, "program", False) else _args(*batch)


def _kwargs(args) -> dict:
    return getattr(args, "kwargs", {})


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


def _checkpoint_state(epoch, step, module, params, optim, history, target_beta) -> dict:
    store = pyro.get_param_store()
    config = model_config(module)
    if config is not None and "beta" in config["options"] and target_beta is not None:
        config["options"]["beta"] = target_beta  # the model's beta, not a warm-up value
    return {
        "model": config,
        "epoch": epoch,
        "step": step,
        "module": module.state_dict() if module is not None else {},
        "param_store": {
            name: store.get_param(name).unconstrained().detach().clone()
            for name in params.store_names
        },
        "optimizer": optim.state_dict(),
        "rng": _rng_state(),
        "history": history.as_dict(),
    }


def _restore(path, module, params, optim, state):
    try:
        if module is not None:
            module.load_state_dict(state["module"])
        store = pyro.get_param_store()
        for name, value in state["param_store"].items():
            if name not in store:
                raise KeyError(f"parameter {name!r} of the checkpoint is not in this model")
            with torch.no_grad():
                store.get_param(name).unconstrained().copy_(value)
        optim.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        every_rank = _set_rank_rng_state(state.get("rank_rng"))
        history = History(**state["history"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match this model and optimizer ({error})"
        ) from error
    return state["epoch"], state["step"], history, every_rank


def _set_rank_rng_state(states) -> bool:
    """Restores this rank's own random streams from a checkpoint's ``rank_rng`` (one
    entry per rank, written by rank 0); False where it holds none for this world."""
    world = distributed.world_size()
    if world == 1:
        return True
    if not isinstance(states, list) or len(states) != world:
        return False
    _set_rng_state(states[distributed.rank()])
    return True
