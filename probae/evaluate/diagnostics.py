r"""Diagnostics of a trained model and of its estimates: the Pareto-smoothed
importance sampling (PSIS) k-hat of importance weights (Vehtari et al., 2024),
the active latent units (Burda et al., 2016), and ELBO surgery, the average KL
split into index-code mutual information and the KL from the aggregate posterior
to the prior (Hoffman & Johnson, 2016).

All of them are importable from :mod:`probae.evaluate`.

**References**

[1] `Importance Weighted Autoencoders`, Yuri Burda, Roger Grosse, Ruslan
Salakhutdinov (ICLR 2016)

[2] `Pareto Smoothed Importance Sampling`, Aki Vehtari, Daniel Simpson, Andrew
Gelman, Yuling Yao, Jonah Gabry (JMLR 2024)

[3] `ELBO surgery: yet another way to carve up the variational evidence lower
bound`, Matthew D. Hoffman, Matthew J. Johnson (NIPS 2016 Workshop on Advances
in Approximate Bayesian Inference)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyro
import torch
from pyro import poutine

from .. import _validate, importance
from .._factorized import closed_form_kl, coordinates, unmasked
from . import _pareto
from ._util import (
    _eval_mode,
    _guide_trace,
    _latent_site,
    _mean_and_stderr,
    _per_batch,
    _prior_of,
    _setup,
)

if TYPE_CHECKING:
    from .results import LogLikelihood

__all__ = [
    "khat_threshold",
    "psis_diagnostic",
    "ActiveUnits",
    "active_units",
    "ElboSurgery",
    "elbo_surgery",
]


# -- Pareto-smoothed importance sampling -----------------------------------------------

#: fewest importance samples for which a Pareto tail can be fitted to each point's weights
PSIS_MIN_SAMPLES = 25


#: fraction of unreliable points (k-hat above the threshold) above which a warning is issued
KHAT_WARN_FRACTION = 0.1


def khat_threshold(num_samples: int) -> float:
    r"""The k-hat above which an importance-sampling estimate from S draws is
    unreliable, :math:`\min(1 - 1/\log_{10} S,\ 0.7)` (Vehtari et al. 2024)."""
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7)


def psis_diagnostic(log_weights: torch.Tensor):
    r"""Pareto-smoothed importance sampling of per-point log-weights: the
    computation of :func:`arviz.psislw`, vectorized in torch on the weights' device.

    :param torch.Tensor log_weights: shape ``(S, N)``, S draws for each of N points.
    :returns: ``(khat, estimate)``, both of shape ``(N,)``: the Pareto shape of each
        point's weights and the PSIS-smoothed estimate
        :math:`\log \frac1S \sum_s \tilde w^{(s)}`.
    """
    if not isinstance(log_weights, torch.Tensor) or log_weights.dim() != 2:
        raise ValueError("log_weights must be a tensor of shape (num_samples, N)")
    if log_weights.shape[0] < PSIS_MIN_SAMPLES:
        raise ValueError(
            f"log_weights must hold at least {PSIS_MIN_SAMPLES} samples per point to fit a "
            f"Pareto tail, got {log_weights.shape[0]}"
        )
    return _psis(log_weights)


def _psis(log_weights):
    num_samples = log_weights.shape[0]
    plain = log_weights.logsumexp(0) - math.log(num_samples)
    # Weights equal to within rounding (an exact posterior as guide) have no tail to
    # fit: the estimate is exact to that precision and k-hat is -inf.
    eps = torch.finfo(log_weights.dtype).eps
    spread = log_weights.amax(0) - log_weights.amin(0)
    flat = spread <= 100 * eps * log_weights.abs().amax(0).clamp(min=1.0)
    k, smoothed = _pareto.psis(log_weights)
    smoothed = smoothed.logsumexp(0) - math.log(num_samples)
    # a failed tail fit leaves the weights unsmoothed and counts as unreliable
    failed = ~torch.isfinite(smoothed)
    estimate = torch.where(flat | failed, plain.to(smoothed), smoothed)
    k = torch.where(torch.isnan(k), k.new_full((), math.inf), k)
    khat = torch.where(flat, k.new_full((), -math.inf), k)
    return khat.to(log_weights.dtype), estimate.to(log_weights.dtype)


def _warn_khat(result: LogLikelihood) -> None:
    fraction = result.fraction_unreliable
    if fraction > KHAT_WARN_FRACTION:
        warnings.warn(
            f"For {fraction:.0%} of the {result.values.numel()} data points the importance "
            f"weights are too heavy-tailed to trust (Pareto k-hat above "
            f"{result.khat_threshold:.2f}): their log-likelihood estimates rest on a few of the "
            f"{result.num_samples} samples and are probably too low. More samples help little; "
            "a guide closer to the posterior (e.g. trained with loss='iwae') helps. See "
            "result.khat for each point.",
            UserWarning,
            stacklevel=3,
        )


# -- active units ----------------------------------------------------------------------


@dataclass
class ActiveUnits:
    r"""Which latent dimensions the model uses.

    :ivar int count: the number of active dimensions.
    :ivar torch.Tensor active: per dimension, whether
        :math:`\mathrm{Var}_x\, \mathbb E_{q(z|x)}[z_j]` exceeds the threshold.
    :ivar torch.Tensor variance: that variance across the data, per dimension.
    :ivar kl: the average :math:`\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))` per dimension
        (nats), or None when q or p does not factor into per-dimension densities.
    :ivar float threshold: the variance threshold.
    """

    count: int
    active: torch.Tensor
    variance: torch.Tensor
    kl: torch.Tensor | None
    threshold: float

    def __int__(self) -> int:
        return self.count


def active_units(
    model, data, threshold: float = 0.01, num_samples: int = 100, c=None, batch_size: int = 1000
) -> ActiveUnits:
    r"""The number of active latent dimensions (Burda et al., 2016),

    .. math:: A_z = \#\{\,j : \mathrm{Cov}_x\big(\mathbb E_{q(z|x)}[z_j]\big) > \delta\,\},

    dimensions whose posterior mean varies across the data; an inactive one has
    collapsed to the prior and carries no information about x. Also the average
    per-dimension :math:`\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))` (closed form where torch
    has one, Monte Carlo otherwise; for a mixture prior, against its marginal in
    dimension j).

    :param model: a probae model or a ``(model, guide)`` pair whose guide samples site "z".
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param float threshold: the variance threshold :math:`\delta` (0.01 in the paper).
    :param int num_samples: draws per point where the posterior mean or a KL has no
        closed form.
    :param c: conditions, one row per point, for conditional models.
    :param int batch_size: points evaluated at once.
    :rtype: ActiveUnits
    """
    if not (isinstance(threshold, (int, float)) and threshold >= 0):
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    num_samples = _validate.samples("num_samples", num_samples)
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "active_units", False)
    means, kls = [], []
    with torch.no_grad(), _eval_mode(pair.module):
        for args in _per_batch(x, c, batch_size):
            fn = _latent_site(_guide_trace(pair.guide, args), "active_units")["fn"]
            try:
                mean = fn.mean
            except NotImplementedError:
                mean = fn.sample((num_samples,)).mean(0)
            means.append(mean.reshape(mean.shape[0], -1))
            if kls is not None:
                kl = _per_dimension_kl(fn, _prior_of(pair, args, "active_units"), num_samples)
                kls = None if kl is None else kls + [kl]
    means = torch.cat(means)
    variance = means.var(0, unbiased=False)
    active = variance > threshold
    kl = None if kls is None else torch.cat(kls).mean(0)
    return ActiveUnits(int(active.sum()), active, variance, kl, float(threshold))


def _coordinate_log_prob(prior, z):
    """log p_j(z_j) for every coordinate j of z, or None if unavailable."""
    base = coordinates(prior)
    if base is not None:
        return base.log_prob(z)
    fn = unmasked(prior)
    if isinstance(fn, torch.distributions.MixtureSameFamily):
        comp = coordinates(fn.component_distribution)
        if comp is not None:
            log_mix = fn.mixture_distribution.logits.log_softmax(-1).unsqueeze(-1)
            return (log_mix + comp.log_prob(z.unsqueeze(-2))).logsumexp(-2)
    return None


def _per_dimension_kl(posterior, prior, num_samples):
    q = coordinates(posterior)
    if q is None:
        return None
    p = coordinates(prior)
    kl = None if p is None else closed_form_kl(q, p)
    if kl is not None:
        return kl
    z = q.rsample((num_samples,)) if q.has_rsample else q.sample((num_samples,))
    log_p = _coordinate_log_prob(prior, z)
    if log_p is None:
        return None
    return (q.log_prob(z) - log_p).mean(0)


# -- ELBO surgery ----------------------------------------------------------------------


@dataclass
class ElboSurgery:
    r"""The average KL term of the ELBO split as in Hoffman & Johnson (2016),

    .. math:: \frac1N \sum_n \mathrm{KL}(q(z|x_n)\,\|\,p(z))
              = I_q(n; z) + \mathrm{KL}(q(z)\,\|\,p(z)),

    each with its Monte Carlo standard error.

    :ivar float average_kl: :math:`\frac1N \sum_n \mathrm{KL}(q(z|x_n)\,\|\,p(z))`.
    :ivar float mutual_information: the index-code mutual information :math:`I_q(n; z)`
        (at most :math:`\log N`).
    :ivar float marginal_kl: :math:`\mathrm{KL}(q(z)\,\|\,p(z))`, q(z) the aggregate posterior.
    :ivar float average_kl_stderr: its Monte Carlo standard error (likewise the others).
    :ivar int num_points: N.
    :ivar int num_samples: draws of z per point.
    """

    average_kl: float
    mutual_information: float
    marginal_kl: float
    average_kl_stderr: float
    mutual_information_stderr: float
    marginal_kl_stderr: float
    num_points: int
    num_samples: int

    @property
    def log_num_points(self) -> float:
        """:math:`\\log N`, the largest possible mutual information."""
        return math.log(self.num_points)


def elbo_surgery(model, data, num_samples: int = 10, c=None, batch_size: int = 100) -> ElboSurgery:
    r"""ELBO surgery (Hoffman & Johnson, 2016): the average KL of the ELBO split into
    the mutual information between the data index and the code, and the KL from the
    aggregate posterior to the prior,

    .. math::

        q(z) = \frac1N \sum_{m=1}^N q(z|x_m), \qquad
        \frac1N \sum_n \mathrm{KL}(q(z|x_n)\|p(z))
        = \underbrace{\frac1N \sum_n \mathbb E_{q(z|x_n)}
          \Big[\log \frac{q(z|x_n)}{q(z)}\Big]}_{I_q(n;\,z)}
        + \underbrace{\mathbb E_{q(z)}\Big[\log \frac{q(z)}{p(z)}\Big]}_{\mathrm{KL}(q(z)\|p(z))}.

    Each point's draws :math:`z \sim q(z|x_n)` are scored under all N posteriors,
    so :math:`\log q(z)` is exact over the data set and the only error is Monte
    Carlo over the draws; the three estimates use the same draws, so the identity
    holds exactly. The cost is :math:`N^2` times ``num_samples`` posterior
    densities. A large marginal KL says the prior is a poor fit to the codes the
    data uses, a place where a richer prior (mixture, VampPrior, flow) gains.

    :param model: a probae model or a ``(model, guide)`` pair whose guide samples
        site "z" from a distribution that can score any z (not a Delta).
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_samples: draws of z per point.
    :param c: conditions, one row per point, for conditional models.
    :param int batch_size: points evaluated at once.
    :rtype: ElboSurgery
    """
    num_samples = _validate.samples("num_samples", num_samples)
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "elbo_surgery", True)
    n = x.shape[0]
    terms = {"kl": [], "mi": [], "marginal": []}
    with torch.no_grad(), _eval_mode(pair.module):
        batches = list(_per_batch(x, c, batch_size))
        posteriors = [
            _latent_site(_guide_trace(pair.guide, args), "elbo_surgery")["fn"] for args in batches
        ]
        for args in batches:
            with pyro.plate(importance.SAMPLE_PLATE, num_samples, dim=-(nesting + 1)):
                trace = poutine.trace(pair.guide).get_trace(*args, **getattr(args, "kwargs", {}))
            site = _latent_site(trace, "elbo_surgery")
            z = site["value"]  # (S, B, *event)
            log_q = importance._per_point(site, importance._site_log_prob(site), nesting)
            log_p = _prior_of(pair, args, "elbo_surgery").log_prob(z)
            # every draw scored under every point's posterior
            flat = z.reshape(-1, 1, *z.shape[2:])
            log_agg = None
            for fn in posteriors:
                part = fn.log_prob(flat).logsumexp(-1)
                log_agg = part if log_agg is None else torch.logaddexp(log_agg, part)
            log_agg = log_agg.reshape(log_q.shape) - math.log(n)
            terms["kl"].append(log_q - log_p)
            terms["mi"].append(log_q - log_agg)
            terms["marginal"].append(log_agg - log_p)
    stats = {key: _mean_and_stderr(torch.cat(value, 1)) for key, value in terms.items()}
    return ElboSurgery(
        average_kl=stats["kl"][0],
        mutual_information=stats["mi"][0],
        marginal_kl=stats["marginal"][0],
        average_kl_stderr=stats["kl"][1],
        mutual_information_stderr=stats["mi"][1],
        marginal_kl_stderr=stats["marginal"][1],
        num_points=n,
        num_samples=num_samples,
    )
