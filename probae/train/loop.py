"""The training loop: :func:`fit`'s signature, and the short loop it runs over a plan.

The plan is set up once (:mod:`.setup`: options, data sources, objective, optimizer,
run directory and resume), then each epoch runs (:mod:`.epoch`, its steps in
:mod:`.step`) with the callbacks (:mod:`.hooks`) called around it, and the run
finishes with their ``on_train_end``; when anything raises, every callback's
``on_exception`` is called before the error goes on.
"""

from __future__ import annotations

import math

import pyro
import torch

from .. import _threads, distributed
from .._common import as_pair
from .compiled import check_compile, compiled
from .epoch import _run_epoch
from .history import History
from .hooks import _call, _failed
from .setup import _plan


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
    compile: bool | str | dict = False,
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
        ``validate``, ``check_data``, ``num_workers``, ``in_memory``, ``callbacks``,
        ``early_stopping``, ``threads`` and ``compile`` may change.
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
        every step and epoch (after the History, before checkpointing), and told through
        their ``on_exception`` when training raises.
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
    :param compile: run the pair's networks (the submodules with a forward pass and
        trainable parameters: encoder, decoder, ...) through :func:`torch.compile` for
        this fit: ``True`` (Inductor), a backend name, or a dict of ``torch.compile``
        options (``backend``, ``mode``, ``dynamic``, ``options``). Pyro's trace stays
        eager. Each network is compiled whole (``fullgraph=True``); a network that breaks
        into pieces, recompiles past torch's limit, or gives a first-batch loss other
        than the eager one is refused with a :class:`~probae.train.compiled.CompileError`
        before any step, never run eagerly in silence. The module is eager again after
        the fit, its ``state_dict`` keys unchanged. It may change on resume.
        See :mod:`probae.train.compiled`.
    :returns: the :class:`History` of the whole run.
    """
    options = dict(locals())
    del options["threads"], options["compile"]
    module = model if isinstance(model, torch.nn.Module) else as_pair(model).module
    rows = math.prod(v for v in (batch_size, num_particles) if isinstance(v, int) and v > 0)
    with (
        pyro.validation_enabled(validate),
        _threads.for_call(threads, module, rows),
        compiled(module, check_compile(compile)) as nets,
    ):
        return _fit(**options, compiled=nets)


def _fit(**options) -> History:
    plan = _plan(options)
    try:
        _loop(plan)
    finally:
        plan.run_lock.close()
    return plan.state.history


def _loop(plan) -> None:
    """The epochs of a planned run, with the callbacks around them."""
    state, hooked = plan.state, plan.callbacks
    try:
        _call(hooked, "on_train_begin", state)
        for epoch in range(state.epoch, state.epochs):
            _run_epoch(plan, epoch)
            _call(hooked, "on_epoch_end", state)
            distributed.barrier()
            if state.stop:
                break
        _call(hooked, "on_train_end", state)
    except BaseException as error:
        _failed(hooked, state, error)
        raise
