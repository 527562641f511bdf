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

from . import importance

__all__ = ["DOCS_SAMPLE_DIMENSION", "check_parameters", "check_sample_dimension"]

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


def check_sample_dimension(model, guide, args, nesting: int, what: str) -> None:
    """Runs the pair once with two draws in a sample plate left of its plates (the
    random stream is left where it was) and raises a ValueError saying what to change
    when it does not broadcast.

    :param int nesting: the pair's plate nesting.
    :param str what: the caller, named in the message.
    """
    error = None
    with torch.no_grad(), importance.preserve_rng(args):
        try:
            log_w = importance.log_weights(model, guide, args, 2, nesting)
        except importance.PairError:
            raise
        except (IndexError, RuntimeError, ValueError) as caught:
            error = caught
        else:
            if tuple(log_w.shape) != (2, args[0].shape[0]):
                error = ValueError(
                    f"log-weights of shape {tuple(log_w.shape)}, expected {(2, args[0].shape[0])}"
                )
    if error is not None:
        raise ValueError(
            f"{what} draws several samples per data point at once, in a pyro.plate at dim "
            f"{-(nesting + 1)} left of the pair's plates, and this pair does not broadcast over "
            f"it ({type(error).__name__}: {error}). Write the model and guide so that every "
            "tensor computed from a latent keeps its leading dimensions: index with x[..., i] "
            "rather than x[:, i], replace boolean-mask indexing y[mask] by "
            "torch.where(mask, y, other) or poutine.mask, and build shapes from the latent "
            f"(z.shape[:-1]) rather than from x.shape[0]. See {DOCS_SAMPLE_DIMENSION}."
        ) from error
