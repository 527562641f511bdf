r"""The Monte Carlo ELBOs whose loss stays on the device.

:class:`ReparamELBO` (``loss="elbo"``) is :class:`~pyro.infer.Trace_ELBO` and
:class:`MeanFieldELBO` (``loss="meanfield"``) is :class:`~pyro.infer.TraceMeanField_ELBO`
(the KL term in closed form where one is registered), each with the same value and
gradient as Pyro's, but with no host read per step; both trace each particle with
``_lean_importance_trace``, Pyro's importance trace without its copies.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import check_fully_reparametrized, is_identically_zero, is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from .._factorized import closed_form_kl
from ..terms import KL_KEY

__all__ = ["MeanFieldELBO", "ReparamELBO"]


def _lean_importance_trace(model, guide, args, kwargs):
    """Pyro's ``get_importance_trace`` (``"flat"`` graph) without its copies.

    With validation off Pyro traces the guide, replays the model against it, copies
    both traces to drop their subsample sites, computes the model's log-densities
    and the guide's score parts. The traces here are fresh and owned by the caller,
    so the subsample sites are removed in place; the densities and score parts are
    computed by the same :class:`~pyro.poutine.Trace` methods, hence the same
    values and gradients. Returns ``None`` where Pyro's own path must run: a
    :class:`~pyro.poutine.messenger.Messenger` guide, or validation enabled (its
    checks of shapes, site matching and enumeration belong to that path).
    """
    if is_validation_enabled() or isinstance(poutine.unwrap(guide), Messenger):
        return None
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    for trace in (guide_trace, model_trace):
        for name in [n for n, site in trace.nodes.items() if site_is_subsample(site)]:
            trace.remove_node(name)
    model_trace.compute_log_prob()
    guide_trace.compute_score_parts()
    return model_trace, guide_trace


class _LossOnDevice:
    """A :meth:`differentiable_loss` that leaves its value on the device.

    Pyro's reads every particle's value on the host (``torch_item``) and checks the
    loss for NaN forwards and backwards (``warn_if_nan``): four to six host-device
    synchronisations per step, each a stall on a GPU. The value and gradient here
    are the same; :func:`probae.fit` checks the loss for non-finite values itself.
    Each particle's traces come from :func:`_lean_importance_trace` where it applies.
    """

    def _get_trace(self, model, guide, args, kwargs):
        traces = _lean_importance_trace(model, guide, args, kwargs)
        return super()._get_trace(model, guide, args, kwargs) if traces is None else traces

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss + self._particle_loss(model_trace, guide_trace) / self.num_particles
        return loss


class ReparamELBO(_LossOnDevice, Trace_ELBO):
    r""":class:`~pyro.infer.Trace_ELBO` whose loss stays on the device.

    With every guide site reparameterized the surrogate loss is the negative ELBO
    itself: :math:`-\sum \log p + \sum \log q` over the sites. A guide site with a
    score-function term takes Pyro's own surrogate (and its host reads).
    """

    def _particle_loss(self, model_trace, guide_trace):
        guide_sites = [s for s in guide_trace.nodes.values() if s["type"] == "sample"]
        if any(not is_identically_zero(s["score_parts"].score_function) for s in guide_sites):
            value, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
            return value + (surrogate - surrogate.detach())
        elbo = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"]
        for site in guide_sites:
            elbo = elbo - site["score_parts"].entropy_term.sum()
        return -elbo


class MeanFieldELBO(_LossOnDevice, TraceMeanField_ELBO):
    """:class:`~pyro.infer.TraceMeanField_ELBO` whose loss stays on the device: the
    same particle loss, with the KL term in closed form where one is registered."""

    def _particle_loss(self, model_trace, guide_trace):
        elbo = 0.0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                elbo = elbo + model_site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            if is_validation_enabled():
                check_fully_reparametrized(guide_site)
            kl = closed_form_kl(guide_site["fn"], model_site["fn"])
            if kl is None:
                entropy_term = guide_site["score_parts"].entropy_term
                elbo = elbo + model_site["log_prob_sum"] - entropy_term.sum()
                continue
            guide_site[KL_KEY] = kl.detach() if torch.is_tensor(kl) else kl  # for LossTerms
            kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
            if torch.is_tensor(kl):
                elbo = elbo - kl.sum()
            else:
                elbo = elbo - kl * torch.Size(guide_site["fn"].batch_shape).numel()
        for name, guide_site in guide_trace.nodes.items():
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                if is_validation_enabled():
                    check_fully_reparametrized(guide_site)
                elbo = elbo - guide_site["score_parts"].entropy_term.sum()
        return -elbo
