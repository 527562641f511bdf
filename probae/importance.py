r"""Per-data-point importance log-weights for any Pyro model/guide pair.

For a model :math:`p(x, z)` and a guide :math:`q(z|x)` whose sites all live in the
``"data"`` plate, one draw :math:`z^{(s)} \sim q(z|x_n)` gives the log-weight

.. math:: \log w_n^{(s)} = \log p(x_n, z^{(s)}) - \log q(z^{(s)}|x_n).

Their average over draws is a Monte Carlo ELBO of point n; the log of their
mean is the importance-weighted bound of Burda et al. (2016). Draws are
vectorized with an outer ``pyro.plate`` to the left of the model's plates.

Site scales (``poutine.scale``, the beta of a beta-VAE) are ignored: these are
the log-weights of the model's joint density, a bound on :math:`\log p(x)`
whatever beta the model was trained with. Site masks are honoured.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

DATA_PLATE = "data"
SAMPLE_PLATE = "_probae_samples"


def _unwrap(fn):
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


def max_plate_nesting(model, guide, args) -> int:
    """Runs the pair once and returns how many plates deep its sites go."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    dims = [
        frame.dim
        for trace in (guide_trace, model_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0


def check_guide_has_density(guide, args, what: str) -> None:
    """Raises a ValueError if a latent site of the guide is a Delta (a point mass)."""
    with poutine.block():
        trace = poutine.trace(guide).get_trace(*args)
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            if isinstance(_unwrap(site["fn"]), dist.Delta):
                raise ValueError(
                    f"{what} needs a guide with a density, but guide site {name!r} is a Delta "
                    "distribution (a deterministic autoencoder): q(z|x) is a point mass, so "
                    "importance weights p(x, z) / q(z|x) do not exist. Use evaluate.elbo for "
                    "its per-point objective."
                )


def _site_log_prob(site) -> torch.Tensor:
    log_prob = site["fn"].log_prob(site["value"])
    if site["mask"] is not None:
        mask = site["mask"]
        log_prob = torch.where(mask, log_prob, log_prob.new_zeros(()))
    return log_prob


def _per_point(site, log_prob: torch.Tensor, nesting: int) -> torch.Tensor:
    """Sums a site's log-density over everything but the sample and data dims."""
    total = nesting + 1  # the sample plate sits at dim -(nesting + 1)
    data_dims = [f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not data_dims:
        raise ValueError(
            f"site {site['name']!r} lies outside pyro.plate({DATA_PLATE!r}): per-data-point "
            "estimates need every sample site inside the data plate"
        )
    while log_prob.dim() < total:
        log_prob = log_prob.unsqueeze(0)
    data_dim = log_prob.dim() + data_dims[0]
    sample_dim = log_prob.dim() - total
    other = [d for d in range(log_prob.dim()) if d not in (data_dim, sample_dim)]
    if other:
        log_prob = log_prob.sum(other, keepdim=True)
    return log_prob.reshape(log_prob.shape[sample_dim], log_prob.shape[data_dim])


def log_weights(model, guide, args, num_samples: int, nesting: int) -> torch.Tensor:
    """``num_samples`` importance log-weights per data point, shape ``(num_samples, N)``.

    :param model: the model, called as ``model(*args)``.
    :param guide: the guide, called as ``guide(*args)``.
    :param tuple args: ``(x,)`` or ``(x, c)``.
    :param int num_samples: draws from the guide, vectorized.
    :param int nesting: the pair's plate nesting (see :func:`max_plate_nesting`).
    """
    with pyro.plate(SAMPLE_PLATE, num_samples, dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    total = 0.0
    for sign, trace in ((1.0, model_trace), (-1.0, guide_trace)):
        trace = prune_subsample_sites(trace)
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            total = total + sign * _per_point(site, _site_log_prob(site), nesting)
    if not isinstance(total, torch.Tensor):
        raise ValueError("the model and guide have no sample sites")
    return total
