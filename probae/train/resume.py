"""The run directory: the record that identifies a run, locking the folder, restoring
its checkpoint on resume (after checking that it belongs to this run), and writing the
checkpoint after every epoch."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import _runstate, distributed, rundir, saving
from ..saving import CHECKPOINT_NAME, model_config, write_checkpoint
from ..saving import read_checkpoint as load_checkpoint
from .state import _checkpoint_state, _restore


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


def _run_record(o, train, optim) -> dict:
    """What defines the run of the checked options ``o``: a resume must match it."""
    loss = o.loss
    return _runstate.record(
        _fingerprint(train),
        o.lr,
        o.optimizer,
        loss=loss if isinstance(loss, str) else type(loss).__name__,
        num_particles=o.num_particles,
        batch_size=o.batch_size,
        binarize=o.binarize,
        beta_warmup=o.beta_warmup,
        seed=o.seed,
        reduction=o.reduction,
        gradient=o.gradient,
        kl_schedule=o.kl_schedule,
        lr_schedule=o.lr_schedule,
        clip_grad_norm=o.clip_grad_norm,
        precision=_runstate.precision_name(o.precision),
        optimizer=_runstate.optimizer_kind(optim),
        world_size=distributed.world_size(),
    )


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


class _CheckpointWriter:
    """``state.write_checkpoint``: writes the run's checkpoint at ``path`` and notes the
    epoch of the last one written to the run's own file (``saved["epoch"]``, named in
    errors as the last good one)."""

    def __init__(self, plan):
        self.plan = plan

    def __call__(self, path) -> None:
        plan = self.plan
        state = plan.state
        content = _checkpoint_state(
            state.epoch,
            state.step,
            plan.module,
            plan.params,
            plan.optim,
            state.history,
            plan.target_beta,
        )
        if distributed.world_size() > 1:  # every rank's random streams, gathered at the end
            content["rank_rng"] = state.extra.get("rank_rng")
        write_checkpoint({**content, "run": plan.run}, path)
        if plan.checkpoint is not None and Path(path) == plan.checkpoint:
            plan.saved["epoch"] = state.epoch
