r"""Objectives: the Pyro ELBO objects that :func:`probae.fit` optimizes.

- ``"elbo"``: :class:`~pyro.infer.Trace_ELBO`, the reparameterized Monte Carlo ELBO
  (:class:`~pyro.infer.TraceEnum_ELBO` when the model has enumerated sites);
- ``"meanfield"``: :class:`~pyro.infer.TraceMeanField_ELBO`, with the KL term in
  closed form where one exists;

both as :class:`ReparamELBO` and :class:`MeanFieldELBO`, whose loss stays on the
device (no host read per step);
- ``"iwae"``: the importance-weighted bound of Burda et al. (2016), :class:`IWAE`.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.util import (
    check_fully_reparametrized,
    get_dependent_plate_dims,
    is_identically_zero,
    is_validation_enabled,
    torch_sum,
)
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence

from . import importance
from ._common import positive_int

__all__ = ["IWAE", "LOSSES", "MeanFieldELBO", "ReparamELBO", "make_elbo"]

LOSSES = ("elbo", "meanfield", "iwae")


class IWAE(RenyiELBO):
    r"""The importance-weighted autoencoder bound (Burda et al., 2016),

    .. math:: \mathcal L_K(x) = \mathbb E\Big[\log \frac1K \sum_{k=1}^K
              \frac{p(x, z_k)}{q(z_k|x)}\Big],

    which is :class:`~pyro.infer.RenyiELBO` at :math:`\alpha = 0`, with a
    :meth:`differentiable_loss` so that parameters living in modules (not in
    Pyro's param store) are trained too. The log-sum-exp runs over particles for
    each data point separately. Its gradient equals RenyiELBO's surrogate:
    the normalized weights times the gradient of each log-weight.

    :param int num_particles: K, drawn in one vectorized pass.
    """

    def __init__(
        self,
        num_particles: int = 5,
        max_plate_nesting: float = float("inf"),
        enumerate: bool = False,
    ):
        if enumerate and max_plate_nesting == float("inf"):
            raise ValueError("IWAE(enumerate=True) needs a finite max_plate_nesting")
        super().__init__(
            alpha=0.0,
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )
        self.enumerate = enumerate

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The negative IWAE bound, summed over data points, differentiable in every
        parameter (reparameterized guides only)."""
        if self.enumerate:
            return self._enumerated_loss(model, guide, args, kwargs)
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            log_w = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_w = log_w + torch_sum(site["log_prob"], sum_dims)
            for name, site in guide_trace.nodes.items():
                if site["type"] == "sample":
                    _, score_function_term, _ = site["score_parts"]
                    if not is_identically_zero(score_function_term):
                        raise ValueError(
                            f"loss='iwae' needs reparameterized guide sites; {name!r} is not"
                        )
                    log_w = log_w - torch_sum(site["log_prob"], sum_dims)
        if self.num_particles == 1:
            log_w = log_w.unsqueeze(0)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return -bound.sum()

    def _enumerated_loss(self, model, guide, args, kwargs):
        # Enumerated sites are summed out of each weight (importance.log_weights),
        # with site scales applied as TraceEnum_ELBO applies them.
        if kwargs:
            raise ValueError("IWAE(enumerate=True) takes positional model arguments only")
        nesting = self.max_plate_nesting - 1  # less the particle plate
        pair = importance.traces(model, guide, args, self.num_particles, nesting)
        for name, site in prune_subsample_sites(pair[0]).nodes.items():
            if site["type"] == "sample" and not site["is_observed"]:
                if not getattr(site["fn"], "has_rsample", False):
                    raise ValueError(
                        f"loss='iwae' needs reparameterized guide sites; {name!r} is not"
                    )
        log_w = importance.log_weights(
            model, guide, args, self.num_particles, nesting, scaled=True, trace_pair=pair
        )
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return -bound.sum()


class _LossOnDevice:
    """A :meth:`differentiable_loss` that leaves its value on the device.

    Pyro's reads every particle's value on the host (``torch_item``) and checks the
    loss for NaN forwards and backwards (``warn_if_nan``): four to six host-device
    synchronisations per step, each a stall on a GPU. The value and gradient here
    are the same; :func:`probae.fit` checks the loss for non-finite values itself.
    """

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
            try:
                kl = kl_divergence(guide_site["fn"], model_site["fn"])
            except NotImplementedError:
                entropy_term = guide_site["score_parts"].entropy_term
                elbo = elbo + model_site["log_prob_sum"] - entropy_term.sum()
                continue
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


def make_elbo(
    loss: str = "elbo", num_particles: int = 1, max_plate_nesting=None, enumerate: bool = False
):
    """The Pyro ELBO object for a loss name (``"elbo"``, ``"meanfield"``, ``"iwae"``).

    :param int max_plate_nesting: how many plates deep the pair goes (guessed on the
        first call if None).
    :param bool enumerate: the model has enumerated discrete sites (needs
        ``max_plate_nesting``): ``"elbo"`` becomes :class:`~pyro.infer.TraceEnum_ELBO`
        and ``"iwae"`` sums the enumerated sites out of each weight.
    """
    num_particles = positive_int("num_particles", num_particles)
    vectorize = num_particles > 1
    nesting = float("inf") if max_plate_nesting is None else max_plate_nesting
    if enumerate:
        if max_plate_nesting is None:
            raise ValueError("make_elbo(enumerate=True) needs max_plate_nesting")
        if loss == "iwae":
            return IWAE(num_particles, max_plate_nesting=nesting, enumerate=True)
        if loss == "elbo":
            return TraceEnum_ELBO(
                num_particles=num_particles,
                vectorize_particles=vectorize,
                max_plate_nesting=nesting,
            )
        if loss == "meanfield":
            raise ValueError(
                "loss='meanfield' cannot sum out the model's enumerated discrete sites; "
                "use loss='elbo' (TraceEnum_ELBO) or loss='iwae'"
            )
    if loss == "iwae":
        return IWAE(num_particles, max_plate_nesting=nesting)
    if loss == "elbo":
        return ReparamELBO(
            num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=nesting
        )
    if loss == "meanfield":
        return MeanFieldELBO(
            num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=nesting
        )
    raise ValueError(f"unknown loss={loss!r}; expected one of {list(LOSSES)}")
