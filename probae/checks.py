"""Checks a user's own pair must pass before its numbers can be trusted: run once, on
the first batch, by :func:`probae.fit` and by every estimator of :mod:`probae.evaluate`.

- :func:`check_parameters`: every parameter collected for the optimizer gets a
  gradient from the loss, so none is silently left untrained (the classic case: a
  pair of plain functions whose ``pyro.module`` calls find parameters of the same
  names, left in Pyro's global param store by another model, and use their own).
- :func:`check_sample_dimension`: the pair broadcasts over a sample dimension to the
  left of its plates, as vectorized particles and importance samples need.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from . import importance

__all__ = [
    "DOCS_SAMPLE_DIMENSION",
    "broadcast_error",
    "check_parameters",
    "check_sample_dimension",
]

DOCS_SAMPLE_DIMENSION = (
    "'Writing your own pair', rule 'The sample dimension', in the model guide "
    "(docs/model_guide.rst)"
)


def check_parameters(loss: torch.Tensor, params: list, store_names: list, module) -> list:
    """Differentiates the first step's loss and refuses parameters that get no gradient.

    :param loss: the first batch's differentiable loss.
    :param list params: the parameters collected for the optimizer: the module's, then
        the param-store ones, in that order.
    :param list store_names: the param-store names of the trailing parameters.
    :param module: the pair's module (None for functions).
    :returns: the gradients (None where a module parameter takes no part in the loss).
    :raises ValueError: when no parameter gets a gradient, or a param-store parameter
        gets none (naming them).
    """
    # Frozen parameters (requires_grad=False) are the user's choice: they take no
    # gradient and are not counted against the pair.
    trainable = [i for i, p in enumerate(params) if p.requires_grad]
    grads = [None] * len(params)
    if loss.requires_grad and trainable:
        found = torch.autograd.grad(loss, [params[i] for i in trainable], allow_unused=True)
        for i, g in zip(trainable, found, strict=True):
            grads[i] = g
    if all(g is None for g in grads):
        raise ValueError(
            f"none of the {len(params)} parameters collected for training gets a gradient from "
            "the loss, so training would change nothing. The pair's parameters must be those it "
            "computes with: a module's (pass the module, or a (model, guide) pair of its bound "
            "methods), or pyro.param / pyro.module parameters it uses. " + _STALE_STORE
        )
    first_store = len(params) - len(store_names)
    unused = [name for name, g in zip(store_names, grads[first_store:], strict=True) if g is None]
    if unused:
        shown = ", ".join(repr(n) for n in unused[:5]) + (" ..." if len(unused) > 5 else "")
        raise ValueError(
            f"{len(unused)} of the {len(store_names)} parameters in Pyro's param store that the "
            f"pair touches get no gradient from the loss ({shown}), so they would not train. "
            + _STALE_STORE
        )
    return list(grads)


_STALE_STORE = (
    "A common cause: Pyro's global param store still holds parameters of the same names from "
    "another model, and pyro.module(name, net) returns those instead of net's own; call "
    "pyro.clear_param_store() before fit, or give the pair a module of its own."
)


def broadcast_error(model, guide, args, nesting: int):
    """Whether the pair broadcasts over a sample dimension left of its plates: None if
    it does, else the error that says how it does not.

    Two draws are made in one vectorized pass, then the same two draws are replayed one
    at a time without the sample plate; the pair broadcasts when both give the same
    per-point log-weights. An error in the vectorized pass (a ``BatchNorm1d`` or
    boolean-mask indexing on the sample dimension) and a silent mix-up of the sample
    dimension with another (``softmax(dim=1)``) are both caught. The random stream is
    left where it was.
    """
    # Every run starts from the same random stream, so that randomness outside the sample
    # sites that does not depend on the draws (a denoising guide's corruption) repeats.
    with torch.no_grad(), importance.preserve_rng(args):
        try:
            with importance.preserve_rng(args):
                pair = importance.traces(model, guide, args, 2, nesting)
            log_w = importance.log_weights(model, guide, args, 2, nesting, trace_pair=pair)
            if log_w.dim() != 2 or log_w.shape[0] != 2:
                return ValueError(
                    f"log-weights of shape {tuple(log_w.shape)}, expected (2, points)"
                )
            for draw in range(2):
                with importance.preserve_rng(args):
                    alone = _replayed_alone(model, guide, args, nesting, pair, draw)
                if alone.shape != log_w[draw].shape or not torch.allclose(
                    alone, log_w[draw], rtol=1e-4, atol=1e-3
                ):
                    return ValueError(
                        "the log-weights of draws made side by side differ from those of the "
                        "same draws made one at a time, so a computation mixes the sample "
                        "dimension with another (softmax(dim=1), a reshape by x.shape[0], ...)"
                    )
        except importance.PairError:
            raise
        except (IndexError, RuntimeError, ValueError, TypeError) as caught:
            return caught
    return None


def _replayed_alone(model, guide, args, nesting, trace_pair, draw: int) -> torch.Tensor:
    """Per-point log-weights of one draw of a vectorized ``trace_pair``, recomputed by
    running the pair without the sample plate on that draw's values."""
    guide_trace, model_trace = trace_pair
    values = poutine.Trace()
    for trace, only_latent in ((guide_trace, False), (model_trace, True)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or name in values.nodes:
                continue
            if only_latent and (
                name in guide_trace.nodes or site["infer"].get("_enumerate_dim") is not None
            ):
                continue
            if site_is_subsample(site):  # a plate's indices: the same for every draw
                values.add_node(name, **site)
                continue
            event_dim = len(site["fn"].event_shape)
            dim = site["value"].dim() - event_dim - (nesting + 1)
            value = site["value"].select(dim, draw) if dim >= 0 else site["value"]
            values.add_node(name, **{**site, "value": value})
    guide_alone = poutine.trace(poutine.replay(guide, trace=values))
    guide_alone = guide_alone.get_trace(*args, **getattr(args, "kwargs", {}))
    enumerated = poutine.enum(model, first_available_dim=-(nesting + 1))
    model_alone = poutine.trace(poutine.replay(enumerated, trace=values))
    model_alone = model_alone.get_trace(*args, **getattr(args, "kwargs", {}))
    return importance._combine(
        importance.joint_terms(guide_alone, model_alone, None, size=importance.points(args))
    )


def check_sample_dimension(model, guide, args, nesting: int, what: str) -> None:
    """Raises a ValueError saying what to change when the pair does not broadcast over
    a sample dimension (see :func:`broadcast_error`), for callers that need one.

    :param int nesting: the pair's plate nesting.
    :param str what: the caller, named in the message.
    """
    error = broadcast_error(model, guide, args, nesting)
    if error is not None:
        raise ValueError(
            f"{what} draws several samples per data point at once, in a pyro.plate at dim "
            f"{-(nesting + 1)} left of the pair's plates, and this pair does not broadcast over "
            f"it ({type(error).__name__}: {error}). Write the model and guide so that every "
            "tensor computed from a latent keeps its leading dimensions: index with x[..., i] "
            "rather than x[:, i], replace boolean-mask indexing y[mask] by "
            "torch.where(mask, y, other) or poutine.mask, and build shapes from the latent "
            f"(z.shape[:-1]) rather than from x.shape[0]. See {DOCS_SAMPLE_DIMENSION}. "
            "evaluate.elbo and evaluate.log_likelihood evaluate such a pair anyway, one draw "
            "at a time."
        ) from error
