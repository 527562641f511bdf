r"""Objectives: the Pyro ELBO objects that :func:`probae.fit` optimizes.

- ``"elbo"``: :class:`~pyro.infer.Trace_ELBO`, the reparameterized Monte Carlo ELBO
  (:class:`~pyro.infer.TraceEnum_ELBO` when the model has enumerated sites);
- ``"meanfield"``: :class:`~pyro.infer.TraceMeanField_ELBO`, with the KL term in
  closed form where one exists;
- ``"iwae"``: the importance-weighted bound of Burda et al. (2016), :class:`IWAE`;
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
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence

from . import importance
from ._common import positive_int

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
]

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


def make_elbo(loss="elbo", num_particles: int = 1, max_plate_nesting=None, enumerate: bool = False):
    """The Pyro ELBO object for a loss name (``"elbo"``, ``"meanfield"``, ``"iwae"``);
    a :class:`pyro.infer.ELBO` instance is returned as it is.

    :param int max_plate_nesting: how many plates deep the pair goes (guessed by Pyro
        on the first call if None).
    :param bool enumerate: the pair has sites marked for enumeration (needs
        ``max_plate_nesting``): ``"elbo"`` becomes :class:`~pyro.infer.TraceEnum_ELBO`
        and ``"iwae"`` sums the model's enumerated sites out of each weight.
    """
    if isinstance(loss, ELBO):
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
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
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
            return torch.as_tensor(value, dtype=args[0].dtype, device=args[0].device)
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


def objective_for(loss, num_particles: int, info: PairInfo):
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
        if loss == "iwae" or isinstance(loss, IWAE):
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
        elbo = differentiable(loss)
    elif info.enumerated:
        elbo = make_elbo(loss, num_particles, max_plate_nesting=nesting, enumerate=True)
        if isinstance(elbo, TraceEnum_ELBO):
            # Guide-only enumeration with a model that uses the value is the M2 pattern:
            # Pyro's strict warning would flag the guide's enumerated sites as unused.
            elbo.strict_enumeration_warning = False
            elbo = differentiable(elbo)  # its differentiable_loss refuses no_grad passes
    else:
        # A known nesting: Pyro guesses none (no log line, no random draws).
        elbo = make_elbo(loss, num_particles, max_plate_nesting=nesting)
    return elbo, lambda model: prior_proposed(model, info.prior_proposed)


def for_pair(loss, num_particles: int, pair, probe):
    """The objective for a :class:`~probae._common.Pair` on its first batch ``probe``:
    :func:`inspect_pair`, then :func:`objective_for`, then, for vectorized particles,
    :func:`probae.checks.check_sample_dimension`.

    :returns: ``(elbo, pair)``, the pair's model wrapped as :func:`objective_for` says.
    """
    from .checks import check_sample_dimension

    num_particles = positive_int("num_particles", num_particles)
    info = inspect_pair(pair.model, pair.guide, probe)
    elbo, wrap = objective_for(loss, num_particles, info)
    pair = pair._replace(model=wrap(pair.model))
    if getattr(elbo, "vectorize_particles", False) or isinstance(elbo, IWAE):
        what = f"loss={loss!r}" if isinstance(loss, str) else type(loss).__name__
        check_sample_dimension(pair.model, pair.guide, probe, info.max_plate_nesting, what)
    return elbo, pair
