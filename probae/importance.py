r"""Per-data-point importance log-weights for any Pyro model/guide pair.

For a model :math:`p(x, z)` and a guide :math:`q(z|x)` whose sites all live in the
``"data"`` plate, one draw :math:`z^{(s)} \sim q(z|x_n)` gives the log-weight

.. math:: \log w_n^{(s)} = \log p(x_n, z^{(s)}) - \log q(z^{(s)}|x_n).

Their average over draws is a Monte Carlo ELBO of point n; the log of their
mean is the importance-weighted bound of Burda et al. (2016). Draws are
vectorized with an outer ``pyro.plate`` to the left of the model's plates.

A latent model site that the guide does not sample and that is not enumerated
(a per-point scale :math:`s` of a Student-t prior written as a Gamma scale
mixture) is drawn from its prior inside the model: its prior is its proposal, so
:math:`\log p(s) - \log q(s) = 0` and the weight is
:math:`\log p(x|z, s) + \log p(z|s) - \log q(z|x)`, unbiased for the same
:math:`p(x, z) / q(z|x)` with :math:`p(z) = \int p(z|s) p(s)\, ds`.

Site scales (``poutine.scale``, the beta of a beta-VAE) are ignored: these are
the log-weights of the model's joint density, a bound on :math:`\log p(x)`
whatever beta the model was trained with. Site masks are honoured.

Discrete model sites marked ``infer={"enumerate": "parallel"}`` (the component
of an enumerated mixture prior) are summed out exactly: the model runs under
:class:`~pyro.poutine.enum`, so each such site takes all its values at once in a
dimension left of the sample plate, and

.. math:: \log w_n^{(s)} = \log \sum_k p(x_n, z^{(s)}, k) - \log q(z^{(s)}|x_n).

The weights are then those of the marginal model, the same numbers as with the
component summed out inside the prior's density.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

DATA_PLATE = "data"
SAMPLE_PLATE = "_probae_samples"


class PairError(ValueError):
    """A pair whose structure per-point weights cannot handle (said in words)."""


def _unwrap(fn):
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


def preserve_rng(args):
    """A block after which the random stream is where it was before."""
    devices = [a.device for a in args if isinstance(a, torch.Tensor) and a.device.type == "cuda"]
    return torch.random.fork_rng(devices=devices[:1])


def max_plate_nesting(model, guide, args) -> int:
    """Runs the pair once and returns how many plates deep its sites go."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args)
        # Draws of model-only sites (an enumerated component, sampled here) leave the
        # stream untouched: estimates then do not depend on whether a site is enumerated.
        with preserve_rng(args):
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
    """Sums a site's log-density over everything but the sample and data dims, keeping
    the enumeration dims to the left: shape ``(*enum, S, N)``."""
    total = nesting + 1  # the sample plate sits at dim -(nesting + 1)
    data_dims = [f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not data_dims:
        found = [f.name for f in site["cond_indep_stack"] if f.name != SAMPLE_PLATE]
        where = f"in plates {found}" if found else "in no plate"
        raise PairError(
            f"site {site['name']!r} lies outside pyro.plate({DATA_PLATE!r}) ({where}): "
            f"per-data-point estimates need every sample site inside a plate named "
            f"{DATA_PLATE!r} over the data points"
            + (f"; rename plate {found[0]!r} to {DATA_PLATE!r}" if len(found) == 1 else "")
        )
    while log_prob.dim() < total:
        log_prob = log_prob.unsqueeze(0)
    enum_dims = log_prob.dim() - total
    data_dim = log_prob.dim() + data_dims[0]
    other = [d for d in range(enum_dims + 1, log_prob.dim()) if d != data_dim]
    if other:
        log_prob = log_prob.sum(other, keepdim=True)
    return log_prob.reshape(*log_prob.shape[: enum_dims + 1], log_prob.shape[data_dim])


def _check_enumerated(site) -> None:
    plates = {f.name for f in site["cond_indep_stack"]} - {DATA_PLATE, SAMPLE_PLATE}
    if plates:
        raise PairError(
            f"enumerated site {site['name']!r} lies in plates {sorted(plates)} besides "
            f"{DATA_PLATE!r}: per-point weights sum out enumerated sites of the data plate only"
        )


def traces(model, guide, args, num_samples: int, nesting: int):
    """Draws ``num_samples`` guide traces per data point (vectorized) and replays the
    model against them, with its enumerated sites enumerated in parallel.

    :returns: ``(guide_trace, model_trace)``.
    """
    with pyro.plate(SAMPLE_PLATE, num_samples, dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*args)
        replayed = poutine.replay(model, trace=guide_trace)
        enumerated = poutine.enum(replayed, first_available_dim=-(nesting + 2))
        model_trace = poutine.trace(enumerated).get_trace(*args)
    return guide_trace, model_trace


def log_weights(
    model, guide, args, num_samples: int, nesting: int, scaled: bool = False, trace_pair=None
) -> torch.Tensor:
    """``num_samples`` importance log-weights per data point, shape ``(num_samples, N)``.

    Enumerated discrete sites of the model are summed out exactly (see the module).

    :param model: the model, called as ``model(*args)``.
    :param guide: the guide, called as ``guide(*args)``.
    :param tuple args: ``(x,)`` or ``(x, c)``.
    :param int num_samples: draws from the guide, vectorized.
    :param int nesting: the pair's plate nesting (see :func:`max_plate_nesting`).
    :param bool scaled: weight each site's log-density by its ``poutine.scale``
        (the training objective of a beta-VAE) instead of ignoring scales. Sites
        that depend on an enumerated site must then share one scale, as in
        :class:`~pyro.infer.TraceEnum_ELBO`, which multiplies the summed-out term.
    :param tuple trace_pair: ``(guide_trace, model_trace)`` from :func:`traces`, to
        reuse draws already made (``num_samples`` is then ignored).
    """
    guide_trace, model_trace = (
        traces(model, guide, args, num_samples, nesting) if trace_pair is None else trace_pair
    )
    free, coupled, scale = joint_terms(guide_trace, model_trace, nesting, scaled)
    if coupled is not None:
        free = free + scale * coupled.reshape(-1, *coupled.shape[-2:]).logsumexp(0)
    return free


def joint_terms(guide_trace, model_trace, nesting: int, scaled: bool = False):
    r"""Splits :math:`\log p(x, z, k) - \log q(z|x)` per point into the terms free of
    enumerated sites, shape ``(S, N)``, and those that depend on them, shape
    ``(*enum, S, N)`` (None without enumerated sites), with the scale they share.

    :returns: ``(free, coupled, scale)``; the log-weight is
        ``free + scale * logsumexp(coupled over the enumeration dims)``.
    """
    free, coupled, scales = 0.0, None, set()
    guide_sites = set(guide_trace.nodes)
    for sign, trace in ((1.0, model_trace), (-1.0, guide_trace)):
        trace = prune_subsample_sites(trace)
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            if sign > 0 and prior_is_proposal(site, guide_sites):
                continue  # log p(s) - log q(s) = 0: the prior is the proposal
            if site["infer"].get("_enumerate_dim") is not None:
                _check_enumerated(site)
            term = sign * _per_point(site, _site_log_prob(site), nesting)
            scale = float(site["scale"]) if scaled else 1.0
            if term.dim() > 2:
                coupled = term if coupled is None else coupled + term
                scales.add(scale)
            else:
                free = free + scale * term
    if coupled is None:
        if not isinstance(free, torch.Tensor):
            raise ValueError("the model and guide have no sample sites")
        return free, None, 1.0
    if len(scales) > 1:
        # TraceEnum_ELBO scales the summed-out term as a whole, so it needs one scale.
        raise PairError(
            "sites that depend on an enumerated site must share one poutine.scale, found "
            f"{sorted(scales)}"
        )
    if not isinstance(free, torch.Tensor):
        free = coupled.new_zeros(coupled.shape[-2:])
    return free, coupled, scales.pop()


def prior_is_proposal(site, guide_sites) -> bool:
    """A latent model site that the guide does not sample and that is not enumerated:
    the model draws it from its prior, so the prior is its proposal."""
    return (
        not site["is_observed"]
        and site["name"] not in guide_sites
        and site["infer"].get("_enumerate_dim") is None
        and site["infer"].get("enumerate") != "parallel"
    )


def enumerated_sites(model, guide, args) -> list:
    """Names of the model's sites marked ``infer={"enumerate": "parallel"}``."""
    with poutine.block(), torch.no_grad(), preserve_rng(args):
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    return [
        name
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and site["infer"].get("enumerate") == "parallel"
        and name not in guide_trace.nodes
    ]
