r"""Training: :func:`fit` runs stochastic variational inference on any model/guide pair.

Each step draws a minibatch (sliced from tensors already on the model's device),
evaluates a Pyro ELBO's differentiable loss, and takes a PyTorch optimizer step:

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
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyro
import torch
from pyro import poutine

from . import data as _data
from . import distributed, importance
from ._common import as_pair, positive_int, prepare
from .objectives import LOSSES, make_elbo
from .saving import CHECKPOINT_NAME, model_config, write_checkpoint
from .saving import read_checkpoint as load_checkpoint

__all__ = ["History", "fit", "load_checkpoint", "CHECKPOINT_NAME"]

BINARIZE = (None, "static", "dynamic")


@dataclass
class History:
    """Per-epoch record of a training run (losses are per data point, in nats)."""

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    beta: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
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
            writer.writerows(zip(*rows.values(), strict=True))


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


def _progress_enabled(progress) -> bool:
    if progress is None:
        return sys.stderr.isatty() and not os.environ.get("CI")
    return bool(progress)


def fit(
    model,
    data,
    epochs: int = 10,
    batch_size: int = 128,
    loss: str = "elbo",
    num_particles: int = 1,
    lr: float = 1e-3,
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
) -> History:
    """Trains a model/guide pair by stochastic variational inference.

    :param model: a probae model, or a user's own ``(model, guide)`` pair of callables
        taking ``(x)`` or ``(x, c)``.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int epochs: total epochs (with ``resume=True``, counted from the run's start).
    :param int batch_size: points per step.
    :param str loss: ``"elbo"``, ``"meanfield"`` or ``"iwae"``.
    :param int num_particles: particles per point (vectorized); K for ``"iwae"``.
    :param float lr: learning rate of the default Adam optimizer.
    :param optimizer: a callable ``params -> torch.optim.Optimizer`` replacing Adam.
    :param str binarize: ``"dynamic"`` (a fresh Bernoulli draw of every batch, for
        Bernoulli likelihoods on grey levels), ``"static"`` (one draw, seeded) or None.
    :param c: conditions, one row per data point (conditional models).
    :param validation: data scored after every epoch (same loss, no gradient).
    :param validation_c: conditions of the validation data.
    :param int beta_warmup: epochs over which beta rises linearly to the model's
        beta (KL annealing, Bowman et al. 2016); 0 for none.
    :param checkpoint_dir: folder for ``checkpoint.pt``, written atomically after
        every epoch (model, optimizer, RNG states, history).
    :param bool resume: continue from ``checkpoint_dir``'s checkpoint if there is one.
    :param int seed: seeds PyTorch, NumPy and Python at the start.
    :param bool progress: show a progress bar (default: when stderr is a terminal).
    :param bool validate: run Pyro's distribution-argument checks at every step. The data
        is checked once up front either way, and a non-finite loss always stops training.
    :param condition: what the condition c is, instead of ``c=``: ``"label"`` (one-hot
        rows of ``data.y``, as many classes as the model's ``c_shape``), the name of a
        tensor field of the data, or a tensor. Without either, a data set that carries
        its own ``c`` (:func:`probae.data.quadrants`) supplies it.
    :returns: the :class:`History` of the whole run.
    """
    with pyro.validation_enabled(validate):
        return _fit(**locals())


def _fit(
    model,
    data,
    epochs,
    batch_size,
    loss,
    num_particles,
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
):
    pair = as_pair(model)
    module = pair.module
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    if loss not in LOSSES:
        raise ValueError(f"unknown loss={loss!r}; expected one of {list(LOSSES)}")
    if binarize not in BINARIZE:
        raise ValueError(f"binarize must be one of {list(BINARIZE)}, got {binarize!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if beta_warmup and not hasattr(module, "beta"):
        raise ValueError("beta_warmup needs a model with a beta attribute (a probae model)")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=")
    if seed is not None:
        pyro.set_rng_seed(seed)
    world = distributed.world_size()
    _decorrelate_ranks()

    c_shape = getattr(module, "c_shape", None)
    c = _data.resolve_condition(data, condition, c, c_shape, "data")
    if validation is not None and validation_c is None and not torch.is_tensor(condition):
        validation_c = _data.resolve_condition(validation, condition, None, c_shape, "validation")
    x, c = _training_data(data, module, c, binarize, "data")
    val = None
    if validation is not None:
        val = _training_data(validation, module, validation_c, binarize, "validation")
        if binarize == "dynamic":  # one fixed draw, so epochs are comparable
            val = (_data.binarize(val[0], seed=0), val[1])
    target_beta = getattr(module, "beta", None)
    steps_per_epoch = math.ceil(math.ceil(x.shape[0] / world) / batch_size)
    warmup_steps = beta_warmup * steps_per_epoch

    # Discover every parameter (and initialize any pyro.param) before building the optimizer.
    params = _Parameters(module)
    probe_x = x[:batch_size]
    probe = _args(
        torch.bernoulli(probe_x) if binarize == "dynamic" else probe_x,
        None if c is None else c[:batch_size],
    )
    if importance.enumerated_sites(pair.model, pair.guide, probe):
        with importance.preserve_rng(probe):
            nesting = importance.max_plate_nesting(pair.model, pair.guide, probe)
        elbo = make_elbo(loss, num_particles, max_plate_nesting=nesting, enumerate=True)
    else:
        elbo = make_elbo(loss, num_particles)
    with poutine.trace(param_only=True) as capture:
        probe_loss = elbo.differentiable_loss(pair.model, pair.guide, *probe)
    params.add_from_trace(capture.trace)
    if not params.params:
        raise ValueError("the model and guide have no parameters to train")
    optim = (
        optimizer(params.params)
        if optimizer is not None
        else torch.optim.Adam(params.params, lr=lr)
    )
    if world > 1:
        # DistributedDataParallel averages the gradients of the ranks' per-point losses.
        grads = torch.autograd.grad(probe_loss, params.params, allow_unused=True)
        unused = any(g is None for g in grads)
        loss_of = distributed.wrap_loss(module, elbo, pair.model, pair.guide, unused)
    else:

        def loss_of(*args):
            return elbo.differentiable_loss(pair.model, pair.guide, *args)

    history = History()
    start_epoch, step = 0, 0
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = Path(checkpoint_dir) / CHECKPOINT_NAME
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if resume and checkpoint.exists():
            start_epoch, step, history = _restore(checkpoint, module, params, optim, x.device)
            _decorrelate_ranks()
    is_writer = distributed.rank() == 0

    bar = _progress_bar(epochs, start_epoch, is_writer and _progress_enabled(progress))
    try:
        for epoch in range(start_epoch, epochs):
            began = time.perf_counter()
            if module is not None:
                module.train()
            total, count = 0.0, 0
            for index, rows in enumerate(_epoch_batches(x.shape[0], batch_size, x.device)):
                if warmup_steps:
                    module.beta = target_beta * min(1.0, (step + 1) / warmup_steps)
                xb = x[rows]
                if binarize == "dynamic":
                    xb = torch.bernoulli(xb)
                args = _args(xb, None if c is None else c[rows])
                with poutine.trace(param_only=True) as capture:
                    batch_loss = loss_of(*args)
                value = batch_loss.item()
                if world > 1:  # every rank sees the same total, so all stop together
                    value = distributed.all_sum(value, x.device)
                if not math.isfinite(value):
                    where = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
                    raise FloatingPointError(
                        f"non-finite loss ({value}) at epoch {epoch + 1}, step {index + 1}: "
                        f"training stopped before the update{where}"
                    )
                new = params.add_from_trace(capture.trace)
                if new:
                    optim.add_param_group({"params": new})
                optim.zero_grad(set_to_none=True)
                (batch_loss / xb.shape[0]).backward()
                optim.step()
                total += value
                count += xb.shape[0] * world
                step += 1
                bar.set_postfix(loss=f"{value / (xb.shape[0] * world):.3f}", refresh=False)
            val_loss = _validation_loss(elbo, pair, module, val, batch_size)
            history.append(
                epoch=epoch + 1,
                train_loss=total / count,
                val_loss=val_loss,
                beta=getattr(module, "beta", None),
                seconds=time.perf_counter() - began,
            )
            for key, value in _epoch_metrics(module).items():
                history.metrics.setdefault(key, []).append(value)
            if checkpoint is not None and is_writer:
                write_checkpoint(
                    _checkpoint_state(epoch + 1, step, module, params, optim, history, target_beta),
                    checkpoint,
                )
            distributed.barrier()
            bar.update(1)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}")
    finally:
        bar.close()
        if target_beta is not None and warmup_steps:
            module.beta = target_beta
    return history


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


def _training_data(data, module, c, binarize, name):
    x, c = prepare(data, module, c, name=name, check_support=binarize is None)
    if binarize is not None:
        if ((x < 0) | (x > 1)).any():
            raise ValueError(
                f"binarize={binarize!r} needs {name} in [0, 1], got values in "
                f"[{x.min().item():.4g}, {x.max().item():.4g}]"
            )
        if binarize == "static":
            x = _data.binarize(x, seed=0)
    return x, c


def _validation_loss(elbo, pair, module, val, batch_size):
    if val is None:
        return None
    x, c = val
    if module is not None:
        module.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            args = _args(x[rows], None if c is None else c[rows])
            total += elbo.differentiable_loss(pair.model, pair.guide, *args).item()
    if module is not None:
        module.train()
    return total / x.shape[0]


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


def _restore(path, module, params, optim, device):
    state = load_checkpoint(path, map_location=device)
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
        history = History(**state["history"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match this model and optimizer ({error})"
        ) from error
    return state["epoch"], state["step"], history


def _progress_bar(epochs, start, enabled):
    from tqdm.auto import tqdm

    return tqdm(
        total=epochs,
        initial=start,
        unit="epoch",
        desc="probae.fit",
        dynamic_ncols=True,
        disable=not enabled,
    )
