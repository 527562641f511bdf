r"""Objectives: the Pyro ELBO objects that :func:`probae.fit` optimizes.

- ``"elbo"``: :class:`~pyro.infer.Trace_ELBO`, the reparameterized Monte Carlo ELBO
  (:class:`~pyro.infer.TraceEnum_ELBO` when the model has enumerated sites);
- ``"meanfield"``: :class:`~pyro.infer.TraceMeanField_ELBO`, with the KL term in
  closed form where one exists;
- ``"iwae"``: the importance-weighted bound of Burda et al. (2016), :class:`IWAE`,
  with the gradient estimators ``gradient="stl"`` (:class:`StickingTheLandingIWAE`)
  and ``gradient="dreg"`` (:class:`DReGIWAE`);
- ``"miwae"``, ``"piwae"``, ``"ciwae"``: the bounds of Rainforth et al. (2018),
  :class:`MIWAE`, :class:`PIWAE`, :class:`CIWAE`;
- any :class:`pyro.infer.ELBO` instance, used as given.

The first two are :class:`ReparamELBO` and :class:`MeanFieldELBO`, whose loss stays on
the device (no host read per step).

:func:`inspect_pair` runs a pair once on a batch and reports what the objective
must know about it: sites marked for enumeration (in the guide or only in the
model), the plate nesting, and latent model sites that the guide does not sample.
Such a site :math:`s` is drawn from its prior inside the model, so its prior is
its proposal, :math:`q(s) = p(s)`, and :math:`\log p(s)` cancels from every
importance weight:

.. math:: \log w = \log p(x|z, s) + \log p(z|s) - \log q(z|x),
          \quad s \sim p(s),\ z \sim q(z|x).

:func:`prior_proposed` masks such sites' log-densities out of the model, so every
Pyro ELBO computes this objective (not one with :math:`\log p(s)` added, which is
no bound at all).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import (
    ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
    TraceTailAdaptive_ELBO,
)
from pyro.infer.util import (
    check_fully_reparametrized,
    get_dependent_plate_dims,
    is_identically_zero,
    is_validation_enabled,
    torch_sum,
)
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch.distributions import kl_divergence

from . import importance
from ._common import positive_int
from .checks import broadcast_error, check_sample_dimension
from .terms import KL_KEY

__all__ = [
    "IWAE",
    "LOSSES",
    "MeanFieldELBO",
    "PairInfo",
    "ReparamELBO",
    "for_pair",
    "inspect_pair",
    "make_elbo",
    "objective_for",
    "prior_proposed",
    "GRADIENTS",
    "StickingTheLandingIWAE",
    "DReGIWAE",
    "MIWAE",
    "PIWAE",
    "CIWAE",
    "make_iwae",
]

LOSSES = ("elbo", "meanfield", "iwae", "miwae", "piwae", "ciwae")


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
        particles = []  # one vectorized pass, or one pass per particle
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
            particles.append(log_w)
        if self.vectorize_particles and self.num_particles > 1:
            log_w = particles[0]
        else:
            log_w = torch.stack(particles)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return -bound.sum()

    def _enumerated_loss(self, model, guide, args, kwargs):
        # Enumerated sites are summed out of each weight (importance.log_weights),
        # with site scales applied as TraceEnum_ELBO applies them.
        args = importance.Arguments(args, kwargs) if kwargs else args
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
            try:
                kl = kl_divergence(guide_site["fn"], model_site["fn"])
            except NotImplementedError:
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


def make_elbo(
    loss="elbo",
    num_particles: int = 1,
    max_plate_nesting=None,
    enumerate: bool = False,
    gradient: str | None = None,
):
    """The Pyro ELBO object for a loss name (``"elbo"``, ``"meanfield"``, ``"iwae"``,
    ``"miwae"``, ``"piwae"``, ``"ciwae"``); a :class:`pyro.infer.ELBO` instance is
    returned as it is.

    :param int max_plate_nesting: how many plates deep the pair goes (guessed by Pyro
        on the first call if None).
    :param bool enumerate: the pair has sites marked for enumeration (needs
        ``max_plate_nesting``): ``"elbo"`` becomes :class:`~pyro.infer.TraceEnum_ELBO`
        and ``"iwae"`` sums the model's enumerated sites out of each weight.
    :param str gradient: the gradient estimator of ``"iwae"``: ``"standard"`` (or
        None), ``"stl"`` or ``"dreg"``.
    """
    if isinstance(loss, ELBO):
        if gradient not in (None, "standard"):
            raise ValueError(
                f"gradient={gradient!r} applies to loss='iwae', not to a "
                f"{type(loss).__name__} instance"
            )
        return loss
    if not isinstance(loss, str):
        raise TypeError(
            f"loss must be one of {list(LOSSES)} or a pyro.infer.ELBO instance, "
            f"got {type(loss).__name__}"
        )
    num_particles = positive_int("num_particles", num_particles)
    vectorize = num_particles > 1
    nesting = float("inf") if max_plate_nesting is None else max_plate_nesting
    if enumerate:
        if max_plate_nesting is None:
            raise ValueError("make_elbo(enumerate=True) needs max_plate_nesting")
    iwae_family = make_iwae(
        loss, num_particles, gradient, max_plate_nesting=nesting, enumerate=enumerate
    )
    if iwae_family is not None:
        return iwae_family
    if enumerate:
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


# -- better IWAE gradients and the bounds between the ELBO and IWAE -----------------------

#: gradient estimators of loss="iwae"
GRADIENTS = ("standard", "stl", "dreg")


class _WeightedIWAE(IWAE):
    r"""An importance-weighted objective whose gradient is written per particle k:

    .. math:: \nabla_\theta = \sum_k a_k \nabla_\theta \log w_k,\qquad
              \nabla_\phi = \sum_k b_k\, \nabla^{\text{path}}_\phi \log w_k
                          - \sum_k s_k\, \nabla_\phi \log q_\phi(z_k|x)\big|_{z_k},

    with model parameters :math:`\theta`, guide parameters :math:`\phi`, the
    reparameterized path :math:`z_k = z(\epsilon_k, \phi)` and weights a, b, s that
    carry no gradient. The plain reparameterized gradient of a bound has
    a = b = s; the estimators below change b and s. The surrogate
    :math:`\sum_k a_k \log w_k` is traced once; the guide's latent values pass
    their gradient on scaled by :math:`b_k / a_k`, and a zero-valued term
    :math:`\sum_k (a_k - s_k)\,(\log q_\phi(\bar z_k|x) - \text{its value})`, with
    :math:`\bar z_k` held fixed, adds back the score part. The loss's value is the
    negative bound.
    """

    #: the weights b differ from a: guide-site gradients are rescaled (one site only)
    rescales_path = False
    gradient_name = "standard"
    loss_name = "iwae"

    def _particles(self, model, guide, args, kwargs):
        """Log-weights ``(K, N)`` and, per guide site, its value and
        :math:`\\log q` at the detached value, shape ``(K, N)``."""
        what = (
            f"loss={self.loss_name!r}"
            if self.gradient_name == "standard"
            else (f"gradient={self.gradient_name!r}")
        )
        if self.enumerate:
            if kwargs:
                raise ValueError(f"{what} takes positional model arguments only")
            nesting = self.max_plate_nesting - 1
            pair = importance.traces(model, guide, args, self.num_particles, nesting)
            log_w = importance.log_weights(
                model, guide, args, self.num_particles, nesting, scaled=True, trace_pair=pair
            )
            guide_trace = prune_subsample_sites(pair[0])

            def reduce(site, log_prob):
                return importance._per_point(site, log_prob, nesting)

        else:
            for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
                sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
                log_w = 0.0
                for site in model_trace.nodes.values():
                    if site["type"] == "sample":
                        log_w = log_w + torch_sum(site["log_prob"], sum_dims)
                for site in guide_trace.nodes.values():
                    if site["type"] == "sample":
                        log_w = log_w - torch_sum(site["log_prob"], sum_dims)

            def reduce(site, log_prob):
                return torch_sum(log_prob, sum_dims)

        single = self.num_particles == 1 and not self.enumerate  # no particle dim then
        if single:
            log_w = log_w.unsqueeze(0)
        latents = []
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if not getattr(site["fn"], "has_rsample", False):
                raise ValueError(f"{what} needs reparameterized guide sites; {name!r} is not")
            value = site["value"]
            log_q = reduce(site, site["fn"].log_prob(value.detach()))
            if single:
                log_q, value = log_q.unsqueeze(0), value.unsqueeze(0)
            latents.append((name, value, log_q))
        if not isinstance(log_w, torch.Tensor) or log_w.dim() != 2:
            raise ValueError(
                f"{what} needs per-point log-weights of shape (particles, points): every "
                "sample site inside one pyro.plate('data')"
            )
        if self.rescales_path and len(latents) != 1:
            raise ValueError(
                f"{what} rescales the gradient of the guide's latent per particle and supports "
                f"a guide with one latent sample site; this guide has {[n for n, _, _ in latents]}"
            )
        return log_w, latents

    def _weights(self, log_w):
        """``(bound per point (N,), log a, log b, s)``, each weight of shape ``(K, N)``."""
        raise NotImplementedError(f"{type(self).__name__} must define _weights(log_w)")

    def differentiable_loss(self, model, guide, *args, **kwargs):
        log_w, latents = self._particles(model, guide, args, kwargs)
        bound, log_a, log_b, s = self._weights(log_w)
        log_a, log_b, s = log_a.detach(), log_b.detach(), s.detach()
        a = log_a.exp()
        if self.rescales_path:
            _, value, _ = latents[0]
            if value.shape[:2] != log_w.shape:
                raise ValueError(
                    f"gradient={self.gradient_name!r} needs the guide's latent to have the "
                    f"particle and data dims first, got shape {tuple(value.shape)}"
                )
            ratio = (log_b - log_a).exp().reshape(*log_w.shape, *([1] * (value.dim() - 2)))
            if value.requires_grad:
                value.register_hook(lambda grad: grad * ratio)
        surrogate = (a * log_w).sum()
        for _, _, log_q in latents:
            score = log_q - log_q.detach()
            surrogate = surrogate + ((a - s) * score).sum()
        bound = bound.sum()
        return -(bound.detach() + surrogate - surrogate.detach())


def _normalized(log_w, dim=0):
    return log_w - log_w.logsumexp(dim, keepdim=True)


class StickingTheLandingIWAE(_WeightedIWAE):
    r"""The IWAE bound with the sticking-the-landing gradient (Roeder et al., 2017):
    the guide's gradient keeps the path derivative through
    :math:`z_k = z(\epsilon_k, \phi)` and drops the score term
    :math:`-\nabla_\phi \log q_\phi(z|x)|_{z}`, whose expectation is zero. It
    has zero variance when q is the exact posterior. For the IWAE bound it is
    biased for K > 1 (Tucker et al., 2019); :class:`DReGIWAE` is its unbiased
    counterpart. The model's gradient is the usual one.

    **References**

    [1] `Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
    Variational Inference`, Geoffrey Roeder, Yuhuai Wu, David Duvenaud (NIPS 2017)
    """

    gradient_name = "stl"

    def _weights(self, log_w):
        k = log_w.shape[0]
        log_a = _normalized(log_w)
        return log_w.logsumexp(0) - math.log(k), log_a, log_a, torch.zeros_like(log_w)


class DReGIWAE(_WeightedIWAE):
    r"""The IWAE bound with the doubly reparameterized gradient (Tucker et al., 2019).
    With normalized weights :math:`\tilde w_k = w_k / \sum_j w_j`, the guide's
    gradient is

    .. math:: \nabla_\phi \mathcal L_K = \mathbb E\Big[\sum_k \tilde w_k^2\,
              \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi}\Big],

    an unbiased estimator of the same gradient whose signal-to-noise ratio does not
    vanish as K grows (Rainforth et al., 2018). The model's gradient is the usual
    :math:`\sum_k \tilde w_k \nabla_\theta \log w_k`. Needs a reparameterized guide
    with one latent sample site.

    **References**

    [1] `Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives`,
    George Tucker, Dieterich Lawson, Shixiang Gu, Chris J. Maddison (ICLR 2019)
    """

    rescales_path = True
    gradient_name = "dreg"

    def _weights(self, log_w):
        k = log_w.shape[0]
        log_a = _normalized(log_w)
        return log_w.logsumexp(0) - math.log(k), log_a, 2 * log_a, torch.zeros_like(log_w)


class _Grouped(_WeightedIWAE):
    def __init__(self, num_particles=64, groups=8, max_plate_nesting=float("inf"), enumerate=False):
        num_particles = positive_int("num_particles", num_particles)
        groups = positive_int("groups", groups)
        if num_particles % groups:
            raise ValueError(
                f"num_particles={num_particles} must be a multiple of groups={groups} "
                "(M groups of K particles)"
            )
        super().__init__(num_particles, max_plate_nesting=max_plate_nesting, enumerate=enumerate)
        self.groups = groups

    def _miwae(self, log_w):
        """The MIWAE bound per point and its log-weights (each particle's share)."""
        m = self.groups
        grouped = log_w.reshape(m, -1, log_w.shape[-1])
        bound = (grouped.logsumexp(1) - math.log(grouped.shape[1])).mean(0)
        log_weights = _normalized(grouped, 1).reshape(log_w.shape) - math.log(m)
        return bound, log_weights


class MIWAE(_Grouped):
    r"""The multiply importance-weighted bound (Rainforth et al., 2018): the
    ``num_particles`` particles form M groups of K = ``num_particles / groups``,

    .. math:: \mathcal L_{M,K} = \frac1M \sum_{m=1}^M \log \frac1K \sum_{k=1}^K w_{m,k},

    between the ELBO (K = 1) and IWAE (M = 1).

    :param int num_particles: M K particles in all.
    :param int groups: M.

    **References**

    [1] `Tighter Variational Bounds are Not Necessarily Better`, Tom Rainforth, Adam
    R. Kosiorek, Tuan Anh Le, Chris J. Maddison, Maximilian Igl, Frank Wood, Yee
    Whye Teh (ICML 2018)
    """

    loss_name = "miwae"

    def _weights(self, log_w):
        bound, log_a = self._miwae(log_w)
        return bound, log_a, log_a, log_a.exp()


class PIWAE(_Grouped):
    r"""The partially importance-weighted objective (Rainforth et al., 2018): the
    model is trained on the IWAE bound of all M K particles and the guide on the
    MIWAE bound :math:`\mathcal L_{M,K}` of the same particles (see :class:`MIWAE`).
    The loss's value is the negative IWAE bound. Needs a reparameterized guide
    with one latent sample site.
    """

    loss_name = "piwae"
    rescales_path = True

    def _weights(self, log_w):
        k = log_w.shape[0]
        log_a = _normalized(log_w)
        _, log_b = self._miwae(log_w)
        return log_w.logsumexp(0) - math.log(k), log_a, log_b, log_b.exp()


class CIWAE(_WeightedIWAE):
    r"""The combination importance-weighted bound (Rainforth et al., 2018),

    .. math:: \mathcal L = \beta\, \frac1K \sum_k \log w_k
              + (1 - \beta) \log \frac1K \sum_k w_k,

    the ELBO and the IWAE bound of the same K particles mixed by :math:`\beta`.

    :param int num_particles: K.
    :param float beta: the ELBO's share, in [0, 1].
    """

    loss_name = "ciwae"

    def __init__(self, num_particles=64, beta=0.5, max_plate_nesting=float("inf"), enumerate=False):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
            raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
        super().__init__(num_particles, max_plate_nesting=max_plate_nesting, enumerate=enumerate)
        self.beta = float(beta)

    def _weights(self, log_w):
        k = log_w.shape[0]
        bound = self.beta * log_w.mean(0) + (1 - self.beta) * (log_w.logsumexp(0) - math.log(k))
        weights = self.beta / k + (1 - self.beta) * _normalized(log_w).exp()
        log_a = weights.log()
        return bound, log_a, log_a, weights


#: the objectives beside IWAE, by loss name
IWAE_OBJECTIVES = {"miwae": MIWAE, "piwae": PIWAE, "ciwae": CIWAE}
IWAE_GRADIENTS = {"stl": StickingTheLandingIWAE, "dreg": DReGIWAE}


def make_iwae(loss: str, num_particles: int, gradient=None, **options):
    """The IWAE-family objective for a loss name and gradient estimator, or None for
    plain ``loss="iwae"`` (:class:`IWAE`). Objectives named by string use
    ``groups=8`` (MIWAE, PIWAE) and ``beta=0.5`` (CIWAE), the settings Rainforth et
    al. (2018) recommend; build the classes directly for others."""
    if gradient not in (None, *GRADIENTS):
        raise ValueError(f"gradient must be one of {list(GRADIENTS)}, got {gradient!r}")
    if gradient not in (None, "standard") and loss != "iwae":
        raise ValueError(f"gradient={gradient!r} applies to loss='iwae', not loss={loss!r}")
    if loss in IWAE_OBJECTIVES:
        if loss in ("miwae", "piwae") and num_particles % 8:
            raise ValueError(
                f"loss={loss!r} splits num_particles into 8 groups, so num_particles must be a "
                f"multiple of 8; got {num_particles} (or build objectives.{loss.upper()} "
                "with other groups)"
            )
        return IWAE_OBJECTIVES[loss](num_particles, **options)
    if loss == "iwae" and gradient in IWAE_GRADIENTS:
        return IWAE_GRADIENTS[gradient](num_particles, **options)
    return None


# -- what the objective must know about a pair -------------------------------------


class PairInfo(NamedTuple):
    """What :func:`inspect_pair` found in one run of a pair.

    :ivar list guide_enumerated: guide sites marked ``infer={"enumerate": ...}``.
    :ivar list model_enumerated: model-only sites marked for enumeration.
    :ivar list prior_proposed: latent model sites neither in the guide nor enumerated:
        drawn from their prior, which is then their proposal.
    :ivar int max_plate_nesting: how many plates deep the pair's sites go.
    """

    guide_enumerated: list
    model_enumerated: list
    prior_proposed: list
    max_plate_nesting: int

    @property
    def enumerated(self) -> bool:
        return bool(self.guide_enumerated or self.model_enumerated)


def _marked(site) -> bool:
    return site["infer"].get("enumerate") in ("parallel", "sequential")


def inspect_pair(model, guide, args) -> PairInfo:
    """Runs the pair once on ``args`` (the random stream is left where it was) and
    reports its enumerated sites, its plate nesting and its model-only latent sites.

    A model-only site that is neither enumerated nor reparameterized is refused when
    its prior depends on parameters: the prior is its proposal, whose gradient would
    then need a score-function term that no Pyro ELBO adds for a model site.

    :raises ValueError: naming the site, for such a site.
    """
    with poutine.block(), importance.preserve_rng(args):
        guide_trace = poutine.trace(guide).get_trace(*args, **getattr(args, "kwargs", {}))
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **getattr(args, "kwargs", {})
        )
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    guide_enumerated = [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and _marked(site)
    ]
    model_enumerated, prior_proposed = [], []
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name in guide_trace.nodes:
            continue
        if _marked(site):
            model_enumerated.append(name)
            continue
        if not getattr(site["fn"], "has_rsample", False):
            log_prob = site["fn"].log_prob(site["value"])
            if log_prob.requires_grad:
                raise ValueError(
                    f"model site {name!r} is not in the guide, not marked for enumeration and "
                    f"not reparameterizable ({type(site['fn']).__name__}), and its prior has "
                    "parameters: no objective can train them. Sample it in the guide, or mark "
                    "it infer={'enumerate': 'parallel'} (a discrete site)"
                )
        prior_proposed.append(name)
    dims = [
        frame.dim
        for trace in (guide_trace, model_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return PairInfo(guide_enumerated, model_enumerated, prior_proposed, -min(dims) if dims else 0)


class _PriorProposed(Messenger):
    def __init__(self, names):
        super().__init__()
        self.names = frozenset(names)

    def _process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] in self.names and not msg["is_observed"]:
            msg["mask"] = False


def prior_proposed(model, names):
    r"""The model with the log-densities of the latent sites ``names`` masked out: each is
    drawn from its prior, which is its proposal, so :math:`\log p(s) - \log q(s) = 0`.
    Their draws still flow (reparameterized) into every site that depends on them."""
    if not names:
        return model
    handler = _PriorProposed(names)

    def masked(*args, **kwargs):
        with handler:
            return model(*args, **kwargs)

    return masked


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


def check_loss(loss) -> None:
    """Raises a ValueError (unknown name) or TypeError (neither a name nor an ELBO)."""
    if isinstance(loss, ELBO):
        return
    if not isinstance(loss, str):
        raise TypeError(
            f"loss must be one of {list(LOSSES)} or a pyro.infer.ELBO instance, "
            f"got {type(loss).__name__}"
        )
    if loss not in LOSSES:
        raise ValueError(
            f"unknown loss={loss!r}; expected one of {list(LOSSES)} or a pyro.infer.ELBO instance"
        )


def objective_for(loss, num_particles: int, info: PairInfo, gradient: str | None = None):
    """The objective :func:`probae.fit` optimizes for a pair that :func:`inspect_pair`
    described: a loss name or a :class:`pyro.infer.ELBO` instance, checked against the
    pair's enumerated and model-only sites.

    - A string loss with enumerated sites becomes :class:`~pyro.infer.TraceEnum_ELBO`
      (``"elbo"``) or an enumerating :class:`IWAE` (``"iwae"``, model-side only).
    - An ELBO instance that cannot sum out enumerated sites is used with a warning: it
      samples them and trains by score-function gradients (high variance).
    - Model-only latent sites are masked out of the model (see :func:`prior_proposed`),
      with a warning naming them; :class:`~pyro.infer.TraceMeanField_ELBO` needs every
      latent site in the guide and is refused.

    :returns: ``(elbo, model_wrapper)``; call ``model_wrapper(model)`` for the model to
        pass the ELBO.
    """
    check_loss(loss)
    given = isinstance(loss, ELBO)
    nesting = info.max_plate_nesting
    if info.guide_enumerated:
        sites = info.guide_enumerated
        if loss in ("iwae", "miwae", "piwae", "ciwae") or isinstance(loss, IWAE):
            raise ValueError(
                f"loss='iwae' cannot sum out the guide's enumerated sites {sites}; use "
                "loss='elbo' (TraceEnum_ELBO), or remove the enumeration marks to sample them"
            )
        if loss == "meanfield" or isinstance(loss, TraceMeanField_ELBO):
            raise ValueError(
                f"loss='meanfield' cannot sum out the guide's enumerated sites {sites}; use "
                "loss='elbo' (TraceEnum_ELBO)"
            )
    if (
        given
        and info.enumerated
        and not isinstance(loss, TraceEnum_ELBO)
        and not getattr(loss, "enumerate", False)
    ):
        warnings.warn(
            f"sites {info.guide_enumerated + info.model_enumerated} are marked for "
            f"enumeration, but {type(loss).__name__} does not enumerate: it samples them "
            "and trains by score-function gradients. TraceEnum_ELBO(max_plate_nesting="
            f"{nesting}) sums them out exactly",
            UserWarning,
            stacklevel=4,
        )
    if info.prior_proposed:
        if loss == "meanfield" or isinstance(loss, TraceMeanField_ELBO):
            raise ValueError(
                f"loss='meanfield' needs every latent model site in the guide; model sites "
                f"{info.prior_proposed} are not. Use loss='elbo' (their prior is then their "
                "proposal) or sample them in the guide"
            )
        warnings.warn(
            f"model sites {info.prior_proposed} are not in the guide: each is drawn from its "
            "prior, which is its proposal, so its log-density cancels from the objective "
            "(a looser bound than with a guide for it or with it integrated out)",
            UserWarning,
            stacklevel=4,
        )
    if given:
        if gradient not in (None, "standard"):
            raise ValueError(
                f"gradient={gradient!r} applies to loss='iwae', not to a "
                f"{type(loss).__name__} instance"
            )
        elbo = differentiable(loss)
    elif info.enumerated:
        elbo = make_elbo(
            loss, num_particles, max_plate_nesting=nesting, enumerate=True, gradient=gradient
        )
        if isinstance(elbo, TraceEnum_ELBO):
            # Guide-only enumeration with a model that uses the value is the M2 pattern:
            # Pyro's strict warning would flag the guide's enumerated sites as unused.
            elbo.strict_enumeration_warning = False
            elbo = differentiable(elbo)  # its differentiable_loss refuses no_grad passes
    else:
        # A known nesting: Pyro guesses none (no log line, no random draws).
        elbo = make_elbo(loss, num_particles, max_plate_nesting=nesting, gradient=gradient)
    return elbo, lambda model: prior_proposed(model, info.prior_proposed)


def for_pair(loss, num_particles: int, pair, probe, gradient: str | None = None, others=()):
    """The objective for a :class:`~probae._common.Pair` on its first batch ``probe``:
    :func:`inspect_pair`, then :func:`objective_for`, then, for vectorized particles,
    :func:`probae.checks.broadcast_error`: a pair that does not broadcast over the
    particle dimension gets its particles one pass each where the objective allows.

    :param others: first batches of other kinds (the unlabelled batches of a
        semi-supervised run, whose guide enumerates the label), inspected too.
    :returns: ``(elbo, pair)``, the pair's model wrapped as :func:`objective_for` says.
    """
    num_particles = positive_int("num_particles", num_particles)
    info = inspect_pair(pair.model, pair.guide, probe)
    for other in others:
        more = inspect_pair(pair.model, pair.guide, other)
        info = PairInfo(
            *(a + [n for n in b if n not in a] for a, b in zip(info[:3], more[:3], strict=True)),
            max(info.max_plate_nesting, more.max_plate_nesting),
        )
    elbo, wrap = objective_for(loss, num_particles, info, gradient)
    pair = pair._replace(model=wrap(pair.model))
    if getattr(elbo, "vectorize_particles", False) or isinstance(elbo, IWAE):
        what = f"loss={loss!r}" if isinstance(loss, str) else type(loss).__name__
        nesting = info.max_plate_nesting
        error = broadcast_error(pair.model, pair.guide, probe, nesting)
        if error is not None:
            # Pyro's ELBOs and the plain IWAE draw particles one pass each when told to
            if type(elbo) in (ReparamELBO, MeanFieldELBO, IWAE) and not info.enumerated:
                warnings.warn(
                    f"{what}: the pair does not broadcast over a particle dimension "
                    f"({type(error).__name__}: {error}); its {num_particles} particles are "
                    "drawn one pass each, exactly but more slowly than in one vectorized pass",
                    UserWarning,
                    stacklevel=3,
                )
                elbo.vectorize_particles = False
                pair = pair._replace(vectorized=False)
            else:
                check_sample_dimension(pair.model, pair.guide, probe, nesting, what)
    return elbo, pair
