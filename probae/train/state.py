"""What a run carries from one process to the next: the random streams, the trained
weights (the module's and those in Pyro's param store), and the checkpoint's content
(written after every epoch, read back on resume)."""

from __future__ import annotations

import pyro
import torch

from .. import distributed
from ..saving import model_config
from .history import History


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


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


def _store_values(params) -> dict:
    """Copies of the ``pyro.param`` values a run trains, by name (unconstrained)."""
    store = pyro.get_param_store()
    return {
        name: store.get_param(name).unconstrained().detach().clone() for name in params.store_names
    }


def _weights(module, params) -> dict:
    """A copy of the trained weights: the module's and those in Pyro's param store."""
    return {
        "module": {k: v.detach().clone() for k, v in module.state_dict().items()}
        if module is not None
        else {},
        "param_store": _store_values(params),
    }


def _load_weights(weights, module) -> None:
    if module is not None:
        module.load_state_dict(weights["module"])
    store = pyro.get_param_store()
    with torch.no_grad():
        for name, value in weights["param_store"].items():
            store.get_param(name).unconstrained().copy_(value)


def _checkpoint_state(epoch, step, module, params, optim, history, target_beta) -> dict:
    config = model_config(module)
    if config is not None and "beta" in config["options"] and target_beta is not None:
        config["options"]["beta"] = target_beta  # the model's beta, not a warm-up value
    return {
        "model": config,
        "epoch": epoch,
        "step": step,
        "module": module.state_dict() if module is not None else {},
        "param_store": _store_values(params),
        "optimizer": optim.state_dict(),
        "rng": _rng_state(),
        "history": history.as_dict(),
    }


def _restore(path, module, params, optim, state):
    """Puts a checkpoint's weights, optimizer state and random streams back; returns
    ``(epoch, step, history, every_rank)``."""
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


def _decorrelate_ranks():
    """Ranks share the epoch order (drawn on rank 0) but not their Monte Carlo noise."""
    rank = distributed.rank()
    if rank > 0:
        pyro.set_rng_seed((torch.initial_seed() + 104729 * rank) % 2**63)
