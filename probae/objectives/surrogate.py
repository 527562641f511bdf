r"""Differentiable losses for Pyro's ELBOs that have none usable.

:func:`probae.fit` minimizes an objective's ``differentiable_loss``, so that parameters
living in modules (not in Pyro's param store) train too. :func:`differentiable` gives
one to an ELBO whose own is missing or refuses to run without gradients: its value is
the ELBO's loss and its gradient the ELBO's own surrogate gradient.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import RenyiELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceTailAdaptive_ELBO
from pyro.infer.util import get_dependent_plate_dims, is_identically_zero, torch_sum

from .iwae import IWAE

__all__ = ["differentiable"]


class _Differentiable:
    """An ELBO with a :meth:`differentiable_loss` whose value is the ELBO's loss and whose
    gradient is the ELBO's own surrogate gradient (what its ``loss_and_grads`` would
    backpropagate), so that module parameters, which Pyro's ``loss_and_grads`` cannot
    see, train too. Under ``torch.no_grad`` it returns ``loss``."""

    def __init__(self, elbo):
        self.elbo = elbo

    def __getattr__(self, name):
        return getattr(self.elbo, name)

    def loss(self, model, guide, *args, **kwargs):
        return self.elbo.loss(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if not torch.is_grad_enabled():
            value = self.elbo.loss(model, guide, *args, **kwargs)
            like = next(
                v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)
            )  # the loss on the data's device and in its dtype
            dtype = like.dtype if like.is_floating_point() else None
            return torch.as_tensor(value, dtype=dtype, device=like.device)
        if isinstance(self.elbo, TraceEnum_ELBO):
            return self.elbo.differentiable_loss(model, guide, *args, **kwargs)
        if isinstance(self.elbo, TraceTailAdaptive_ELBO):
            # It reports no loss (inf by design): the value is the ELBO of its draws.
            loss, surrogate = 0.0, 0.0
            for model_trace, guide_trace in self.elbo._get_traces(model, guide, args, kwargs):
                _, particle = self.elbo._differentiable_loss_particle(model_trace, guide_trace)
                value = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
                loss = loss + value.detach() / self.elbo.num_particles
                surrogate = surrogate + particle / self.elbo.num_particles
        elif isinstance(self.elbo, TraceGraph_ELBO):
            elbo, surrogate = self.elbo._loss_and_surrogate_loss(model, guide, args, kwargs)
            loss = -elbo
        else:
            loss, surrogate = _renyi_surrogate(self.elbo, model, guide, args, kwargs)
        if not getattr(surrogate, "requires_grad", False):
            return torch.as_tensor(loss)
        return surrogate + (loss - surrogate).detach()


def _renyi_surrogate(elbo, model, guide, args, kwargs):
    """:meth:`pyro.infer.RenyiELBO.loss_and_grads`'s loss and surrogate loss, as tensors."""
    values, surrogates = [], []
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        value, surrogate = 0.0, 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                log_prob = torch_sum(site["log_prob"], sum_dims)
                value, surrogate = value + log_prob.detach(), surrogate + log_prob
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample":
                _, score_function_term, entropy_term = site["score_parts"]
                log_prob = torch_sum(site["log_prob"], sum_dims)
                value = value - log_prob.detach()
                if not is_identically_zero(entropy_term):
                    if not is_identically_zero(score_function_term):
                        raise ValueError(
                            f"RenyiELBO needs reparameterized guide sites; {name!r} is not"
                        )
                    surrogate = surrogate - log_prob
                if not is_identically_zero(score_function_term):
                    surrogate = surrogate + (elbo.alpha / (1.0 - elbo.alpha)) * log_prob
        values.append(torch.as_tensor(value))
        surrogates.append(torch.as_tensor(surrogate))
    if elbo.vectorize_particles and elbo.num_particles > 1:
        values, surrogates = values[0], surrogates[0]
    else:
        values, surrogates = torch.stack(values), torch.stack(surrogates)
    log_weights = (1.0 - elbo.alpha) * values
    log_mean = torch.logsumexp(log_weights, dim=0, keepdim=True) - math.log(elbo.num_particles)
    loss = -log_mean.sum() / (1.0 - elbo.alpha)
    weights = (log_weights - log_mean).exp()
    return loss, -(weights * surrogates).sum() / elbo.num_particles


def differentiable(elbo):
    """The ELBO itself if it has a usable ``differentiable_loss``, else a wrapper that
    gives it one (:class:`~pyro.infer.RenyiELBO`, :class:`~pyro.infer.TraceGraph_ELBO`,
    :class:`~pyro.infer.TraceTailAdaptive_ELBO`, whose own loss is ``inf``;
    :class:`~pyro.infer.TraceEnum_ELBO`, whose ``differentiable_loss`` refuses to run
    without gradients, as in a validation pass)."""
    if isinstance(elbo, (TraceEnum_ELBO, TraceGraph_ELBO, TraceTailAdaptive_ELBO)) or (
        isinstance(elbo, RenyiELBO) and not isinstance(elbo, IWAE)
    ):
        return _Differentiable(elbo)
    if not callable(getattr(elbo, "differentiable_loss", None)):
        raise TypeError(
            f"loss={type(elbo).__name__}(...) has no differentiable_loss, and probae does not "
            "know its surrogate loss; use one of Pyro's ELBOs or give it a differentiable_loss"
        )
    return elbo
