r"""Per-data-point importance log-weights for any Pyro model/guide pair.

For a model :math:`p(x, z)` and a guide :math:`q(z|x)` whose sites all live in one
plate over the data points (the *data plate*, whatever its name: the outermost
plate that holds every sample site, see :func:`data_plate`), one draw
:math:`z^{(s)} \sim q(z|x_n)` gives the log-weight

.. math:: \log w_n^{(s)} = \log p(x_n, z^{(s)}) - \log q(z^{(s)}|x_n).

summed over every site of point n: several latent sites, sites in nested plates
and the steps of a ``pyro.markov`` sequence alike. Their average over draws is a
Monte Carlo ELBO of point n; the log of their mean is the importance-weighted
bound of Burda et al. (2016). Draws are vectorized with an outer ``pyro.plate``
to the left of the model's plates; a pair that does not broadcast over it is
run once per draw instead (``vectorized=False``), with the same draws.

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
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

SAMPLE_PLATE = "_probae_samples"


class Arguments(tuple):
    """The arguments of one call of a model and guide: a tuple of positional
    arguments that also carries keyword arguments (``.kwargs``).

    :param args: the positional arguments.
    :param dict kwargs: the keyword arguments.
    """

    def __new__(cls, args=(), kwargs=None):
        self = super().__new__(cls, args)
        self.kwargs = dict(kwargs or {})
        return self

    def __repr__(self) -> str:
        return f"Arguments({tuple(self)!r}, {self.kwargs!r})"


class PairError(ValueError):
    """A pair whose structure per-point weights cannot handle (said in words)."""


def _unwrap(fn):
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


def preserve_rng(args):
    """A block after which the random stream is where it was before."""
    values = (*args, *getattr(args, "kwargs", {}).values())
    devices = [a.device for a in values if isinstance(a, torch.Tensor) and a.device.type == "cuda"]
    return torch.random.fork_rng(devices=devices[:1])


def max_plate_nesting(model, guide, args) -> int:
    """Runs the pair once and returns how many plates deep its sites go."""
    with poutine.block():
        guide_trace = _traced(guide, args)
        # Draws of model-only sites (an enumerated component, sampled here) leave the
        # stream untouched: estimates then do not depend on whether a site is enumerated.
        with preserve_rng(args):
            model_trace = _traced(poutine.replay(model, trace=guide_trace), args)
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
        trace = _traced(guide, args)
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


def data_plate(traces, name: str | None = None, size: int | None = None) -> str:
    """The name of the pair's data plate, found in its traces: the outermost plate that
    holds every sample site (latent and observed) of the model and the guide, besides
    the sample plate. Where several plates hold every site, the outermost one whose
    size is ``size`` (the batch's point count, where known) is taken.

    :param traces: the traces of one run of the pair (the guide's and the model's).
    :param str name: the plate's name, given by the user (checked, not searched for).
    :param int size: the number of points in the batch, or None.
    :raises PairError: when no plate holds every site (a latent shared by all points,
        or a site outside every plate), naming the sites and plates, or when ``name``
        is not such a plate.
    """
    common, sites = None, []
    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            frames = [
                f for f in site["cond_indep_stack"] if f.vectorized and f.name != SAMPLE_PLATE
            ]
            names = [f.name for f in frames]
            common = names if common is None else [n for n in common if n in names]
            sites.append((site["name"], names, {f.name: f.size for f in frames}))
    if common is None:
        raise PairError("the model and guide have no sample sites")
    if name is not None:
        outside = [s for s, names, _ in sites if name not in names]
        if outside:
            raise PairError(
                f"plate={name!r}: sites {outside} lie outside pyro.plate({name!r}); "
                "per-data-point estimates need every sample site inside the data plate"
            )
        return name
    if not common:
        plates = sorted({n for _, names, _ in sites for n in names})
        outside = [s for s, names, _ in sites if not names] or [
            s for s, names, _ in sites if set(plates) - set(names)
        ]
        raise PairError(
            f"no plate holds every sample site (plates found: {plates}; sites {outside[:5]} "
            "lie outside some of them): per-data-point estimates need one plate over the data "
            "points around every site. A latent shared by all points (a global site) has no "
            "per-point weight; sample it inside the data plate, or pass plate= to name the plate"
        )
    if len(common) > 1 and size is not None:
        sizes = sites[0][2]
        matching = [n for n in common if sizes[n] in (size, -1)]
        if not matching:
            raise PairError(
                f"plates {common} each hold every site, and none has the batch's {size} "
                "points: pass plate= to name the data plate"
            )
        return matching[0]
    return common[0]


def _per_point(site, log_prob: torch.Tensor, nesting: int, plate: str | None = None):
    """Sums a site's log-density over everything but the sample and data dims, keeping
    the enumeration dims to the left: shape ``(*enum, S, N)`` (``(*enum, N)`` with
    ``nesting`` None: no sample plate). ``plate`` is the data plate's name; None takes
    the site's outermost plate."""
    total = nesting + 1 if nesting is not None else 0  # sample plate at -(nesting + 1)
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.name != SAMPLE_PLATE]
    data_dim = next(f.dim for f in frames if plate is None or f.name == plate)
    total = max(total, -data_dim)
    while log_prob.dim() < total:
        log_prob = log_prob.unsqueeze(0)
    enum_dims = log_prob.dim() - total
    keep = 1 if nesting is not None else 0  # the sample dim
    data_dim = log_prob.dim() + data_dim
    other = [d for d in range(enum_dims + keep, log_prob.dim()) if d != data_dim]
    if other:
        log_prob = log_prob.sum(other, keepdim=True)
    return log_prob.reshape(*log_prob.shape[: enum_dims + keep], log_prob.shape[data_dim])


def _check_enumerated(site, plate) -> None:
    plates = {f.name for f in site["cond_indep_stack"]} - {plate, SAMPLE_PLATE}
    if plates:
        raise PairError(
            f"enumerated site {site['name']!r} lies in plates {sorted(plates)} besides "
            f"{plate!r}: per-point weights sum out enumerated sites of the data plate only"
        )


def call(fn, args):
    """``fn(*args, **kwargs)`` for a batch's arguments (a tuple, or a
    :class:`Arguments` carrying keyword arguments too)."""
    return fn(*args, **getattr(args, "kwargs", {}))


def _traced(fn, args):
    return poutine.trace(fn).get_trace(*args, **getattr(args, "kwargs", {}))


def traces(model, guide, args, num_samples: int, nesting: int):
    """Draws ``num_samples`` guide traces per data point (vectorized) and replays the
    model against them, with its enumerated sites enumerated in parallel.

    The model is enumerated inside the replay, as :class:`~pyro.infer.TraceEnum_ELBO`
    composes them, so ``pyro.markov`` scopes see every site of the model.

    :returns: ``(guide_trace, model_trace)``.
    """
    with pyro.plate(SAMPLE_PLATE, num_samples, dim=-(nesting + 1)):
        guide_trace = _traced(guide, args)
        enumerated = poutine.enum(model, first_available_dim=-(nesting + 2))
        model_trace = _traced(poutine.replay(enumerated, trace=guide_trace), args)
    return guide_trace, model_trace


def _one_draw(model, guide, args, nesting: int):
    """One guide trace without a sample plate, and the model replayed against it."""
    guide_trace = _traced(guide, args)
    enumerated = poutine.enum(model, first_available_dim=-(nesting + 1))
    model_trace = _traced(poutine.replay(enumerated, trace=guide_trace), args)
    return guide_trace, model_trace


def log_weights(
    model,
    guide,
    args,
    num_samples: int,
    nesting: int,
    scaled: bool = False,
    trace_pair=None,
    vectorized: bool = True,
    plate: str | None = None,
) -> torch.Tensor:
    """``num_samples`` importance log-weights per data point, shape ``(num_samples, N)``.

    Enumerated discrete sites of the model are summed out exactly (see the module).

    :param model: the model, called as ``model(*args, **args.kwargs)``.
    :param guide: the guide, called the same way.
    :param tuple args: the batch's arguments: ``(x,)``, ``(x, c)``, or a
        :class:`Arguments` (any positional and keyword arguments).
    :param int num_samples: draws from the guide, vectorized.
    :param int nesting: the pair's plate nesting (see :func:`max_plate_nesting`).
    :param bool scaled: weight each site's log-density by its ``poutine.scale``
        (the training objective of a beta-VAE) instead of ignoring scales. Sites
        that depend on an enumerated site must then share one scale, as in
        :class:`~pyro.infer.TraceEnum_ELBO`, which multiplies the summed-out term.
    :param tuple trace_pair: ``(guide_trace, model_trace)`` from :func:`traces`, to
        reuse draws already made (``num_samples`` is then ignored).
    :param bool vectorized: draw the samples in one vectorized pass (a sample plate
        left of the pair's plates); False runs the pair once per draw, for pairs
        that do not broadcast over a sample dimension. With the same random stream
        both draw the same values where each draw's size is a multiple of 16 (how
        PyTorch fills normal tensors on the CPU).
    :param str plate: the data plate's name; None finds it (:func:`data_plate`).
    """
    size = points(args)
    if not vectorized and trace_pair is None:
        rows = []
        for _ in range(num_samples):
            guide_trace, model_trace = _one_draw(model, guide, args, nesting)
            rows.append(_combine(joint_terms(guide_trace, model_trace, None, scaled, plate, size)))
        return torch.stack(rows)
    guide_trace, model_trace = (
        traces(model, guide, args, num_samples, nesting) if trace_pair is None else trace_pair
    )
    return _combine(joint_terms(guide_trace, model_trace, nesting, scaled, plate, size))


def _combine(terms) -> torch.Tensor:
    """The log-weight ``free + scale * logsumexp(coupled over the enumeration dims)``."""
    free, coupled, scale = terms
    if coupled is not None:
        point_dims = free.dim()
        free = free + scale * coupled.reshape(-1, *coupled.shape[-point_dims:]).logsumexp(0)
    return free


def points(args) -> int | None:
    """The number of data points in a batch: its ``size`` where it says, else the
    leading dimension of its first tensor argument."""
    size = getattr(args, "size", None)
    if size is not None:
        return size
    for value in (*args, *getattr(args, "kwargs", {}).values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


def joint_terms(guide_trace, model_trace, nesting, scaled: bool = False, plate=None, size=None):
    r"""Splits :math:`\log p(x, z, k) - \log q(z|x)` per point into the terms free of
    enumerated sites, shape ``(S, N)``, and those that depend on them, shape
    ``(*enum, S, N)`` (None without enumerated sites), with the scale they share.
    With ``nesting`` None (one draw, no sample plate) the shapes lack the ``S``.

    :param str plate: the data plate's name; None finds it (:func:`data_plate`).
    :param int size: the batch's point count, where known (see :func:`data_plate`).
    :returns: ``(free, coupled, scale)``; the log-weight is
        ``free + scale * logsumexp(coupled over the enumeration dims)``.
    """
    model_trace = prune_subsample_sites(model_trace)
    guide_trace = prune_subsample_sites(guide_trace)
    plate = data_plate((guide_trace, model_trace), plate, size)
    point_dims = 2 if nesting is not None else 1
    free, coupled, scales = 0.0, None, set()
    guide_sites = set(guide_trace.nodes)
    for sign, trace in ((1.0, model_trace), (-1.0, guide_trace)):
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            if sign > 0 and prior_is_proposal(site, guide_sites):
                continue  # log p(s) - log q(s) = 0: the prior is the proposal
            if site["infer"].get("_enumerate_dim") is not None:
                _check_enumerated(site, plate)
            term = sign * _per_point(site, _site_log_prob(site), nesting, plate)
            scale = float(site["scale"]) if scaled else 1.0
            if term.dim() > point_dims:
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
        free = coupled.new_zeros(coupled.shape[-point_dims:])
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
        guide_trace = _traced(guide, args)
        model_trace = _traced(poutine.replay(model, trace=guide_trace), args)
    return [
        name
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and site["infer"].get("enumerate") == "parallel"
        and name not in guide_trace.nodes
    ]
