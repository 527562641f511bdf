r"""Diagnostics of a model's aggregate posterior :math:`q(z) = \frac1N\sum_n
q(z|x_n)`: :func:`kl_decomposition`, the average KL of the ELBO split into index-code
mutual information, total correlation and dimension-wise KL (Chen et al. 2018), and
:func:`total_correlation`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from ... import importance
from ..._common import positive_int
from ..._factorized import coordinates
from .._util import _eval_mode, _latent_site, _mean_and_stderr, _per_batch, _prior_of, _setup


@dataclass
class KLDecomposition:
    r"""The average KL of the ELBO split three ways (Chen et al. 2018),

    .. math:: \frac1N\sum_n \mathrm{KL}(q(z|x_n)\|p(z))
              = \underbrace{I_q(n; z)}_{\text{index-code MI}}
              + \underbrace{\mathrm{KL}\big(q(z)\,\|\,\textstyle\prod_j q(z_j)\big)}_{\text{total correlation}}
              + \underbrace{\textstyle\sum_j \mathrm{KL}(q(z_j)\|p(z_j))}_{\text{dimension-wise KL}}.

    :ivar float average_kl: left-hand side.
    :ivar float mutual_information: :math:`I_q(n; z)`.
    :ivar float total_correlation: TC of the aggregate posterior.
    :ivar float dimension_wise_kl: the sum of the marginal KLs.
    :ivar float total_correlation_stderr: its Monte Carlo standard error (likewise).
    :ivar int num_points: N.
    :ivar int num_samples: draws of z per point.
    """

    average_kl: float
    mutual_information: float
    total_correlation: float
    dimension_wise_kl: float
    average_kl_stderr: float
    mutual_information_stderr: float
    total_correlation_stderr: float
    dimension_wise_kl_stderr: float
    num_points: int
    num_samples: int


def _factorized(fn, what, which):
    """The per-coordinate distribution of ``fn``, or a ValueError saying ``what``
    needs one."""
    base = coordinates(fn)
    if base is not None:
        return base
    raise ValueError(
        f"{what} needs a factorized {which} (independent coordinates, e.g. "
        f"Normal(loc, scale).to_event(1)), got {type(fn).__name__}"
    )


def kl_decomposition(
    model, data, num_samples: int = 1, c=None, batch_size: int = 100
) -> KLDecomposition:
    r"""The three-way split of the average KL (:class:`KLDecomposition`), extending
    :func:`~probae.evaluate.elbo_surgery`: the aggregate posterior
    :math:`q(z) = \frac1N\sum_m q(z|x_m)` and its marginals
    :math:`q(z_j) = \frac1N\sum_m q(z_j|x_m)` are evaluated exactly over the data at
    draws :math:`z \sim q(z|x_n)`, so

    .. math:: \log\frac{q(z|x_n)}{p(z)} = \log\frac{q(z|x_n)}{q(z)}
              + \log\frac{q(z)}{\prod_j q(z_j)} + \log\frac{\prod_j q(z_j)}{p(z)}

    holds draw by draw and the three averages sum to the average KL exactly; the only
    error is Monte Carlo over the draws (and finite N). The cost is :math:`N^2`
    posterior densities per draw. Needs a factorized guide and prior at site "z".

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset` or a tensor ``(N, ...)``.
    :param int num_samples: draws of z per point.
    :param c: conditions, for conditional models.
    :param int batch_size: points evaluated at once.
    """
    num_samples = positive_int("num_samples", num_samples)
    what = "kl_decomposition"
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, what, True)
    n = x.shape[0]
    terms = {"kl": [], "mi": [], "tc": [], "dim": []}
    with torch.no_grad(), _eval_mode(pair.module):
        batches = list(_per_batch(x, c, batch_size))
        posteriors = []
        for args in batches:
            with poutine.block():
                site = _latent_site(
                    poutine.trace(pair.guide).get_trace(*args, **getattr(args, "kwargs", {})), what
                )
            posteriors.append(_factorized(site["fn"], what, "posterior"))
        for args in batches:
            with (
                poutine.block(),
                pyro.plate(importance.SAMPLE_PLATE, num_samples, dim=-(nesting + 1)),
            ):
                site = _latent_site(
                    poutine.trace(pair.guide).get_trace(*args, **getattr(args, "kwargs", {})), what
                )
            z = site["value"]  # (S, B, D)
            log_q = site["fn"].log_prob(z)
            prior = _prior_of(pair, args, what)
            _factorized(prior, what, "prior")
            log_p = prior.log_prob(z)
            flat = z.reshape(-1, 1, z.shape[-1])  # every draw against every point
            log_joint, log_marginals = None, None
            for q in posteriors:
                per_coordinate = q.log_prob(flat)  # (S*B, N_b, D)
                joint = per_coordinate.sum(-1).logsumexp(-1)
                marginal = per_coordinate.logsumexp(-2)
                log_joint = joint if log_joint is None else torch.logaddexp(log_joint, joint)
                log_marginals = (
                    marginal if log_marginals is None else torch.logaddexp(log_marginals, marginal)
                )
            log_agg = log_joint.reshape(log_q.shape) - math.log(n)
            log_product = (log_marginals - math.log(n)).sum(-1).reshape(log_q.shape)
            terms["kl"].append(log_q - log_p)
            terms["mi"].append(log_q - log_agg)
            terms["tc"].append(log_agg - log_product)
            terms["dim"].append(log_product - log_p)
    stats = {
        key: _mean_and_stderr(torch.cat(v, -1).reshape(num_samples, -1)) for key, v in terms.items()
    }
    return KLDecomposition(
        average_kl=stats["kl"][0],
        mutual_information=stats["mi"][0],
        total_correlation=stats["tc"][0],
        dimension_wise_kl=stats["dim"][0],
        average_kl_stderr=stats["kl"][1],
        mutual_information_stderr=stats["mi"][1],
        total_correlation_stderr=stats["tc"][1],
        dimension_wise_kl_stderr=stats["dim"][1],
        num_points=n,
        num_samples=num_samples,
    )


def total_correlation(model, data, num_samples: int = 1, c=None, batch_size: int = 100) -> float:
    r"""The total correlation of the aggregate posterior,
    :math:`\mathrm{KL}(q(z)\,\|\,\prod_j q(z_j)) = \mathbb E_{q(z)}[\log q(z) -
    \sum_j \log q(z_j)]`, estimated as in :func:`kl_decomposition`. For a Gaussian
    q(z) with correlation matrix :math:`\rho` it is :math:`-\frac12\log\det\rho`.
    """
    return kl_decomposition(model, data, num_samples, c, batch_size).total_correlation
