r"""Estimates of how well a trained model explains data, per data point.

Every function takes a probae model or a user's own ``(model, guide)`` pair, and
a :class:`probae.data.Dataset` or a plain tensor.

- :func:`elbo`: the evidence lower bound of each point (beta = 1, whatever beta
  the model was trained with), :math:`\frac1S\sum_s \log w^{(s)}`.
- :func:`log_likelihood`: the importance-weighted estimate of :math:`\log p(x)`
  (Burda et al., 2016),

  .. math:: \log \hat p(x) = \log \frac1S \sum_{s=1}^S \frac{p(x, z^{(s)})}{q(z^{(s)}|x)},
            \quad z^{(s)} \sim q(z|x),

  a lower bound in expectation that rises to :math:`\log p(x)` as S grows.
  Samples are drawn in vectorized chunks and combined with a running
  log-sum-exp, so memory is bounded by ``chunk_size * batch_size`` draws
  however large ``num_samples`` is.
- :func:`reconstruction_error`: squared error of E[x|z] at the code of x.
- Diagnostics: the Pareto-smoothed importance sampling k-hat of every point
  (inside :func:`log_likelihood`), :func:`active_units`, :func:`elbo_surgery`,
  :func:`bits_per_dim`, :func:`cluster` with :func:`clustering_accuracy`, and
  :func:`to_inference_data` for ArviZ.

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
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from .. import importance
from .._common import as_pair, positive_int, prepare

__all__ = [
    "LogLikelihood",
    "conditional_elbo",
    "conditional_log_likelihood",
    "elbo",
    "linear_probe",
    "log_likelihood",
    "reconstruction_error",
    "psis_diagnostic",
    "khat_threshold",
    "cluster",
    "clustering_accuracy",
    "ActiveUnits",
    "active_units",
    "ElboSurgery",
    "elbo_surgery",
    "bits_per_dim",
    "to_inference_data",
]


@dataclass
class LogLikelihood:
    r"""An importance-weighted log-likelihood estimate, with its PSIS diagnostic.

    :ivar torch.Tensor values: the IWAE estimate for each data point, in nats.
    :ivar int num_samples: importance samples per point.
    :ivar khat: the Pareto k-hat of each point's importance weights (None when
        PSIS was not run). Below :attr:`khat_threshold` the estimate is reliable;
        above it the weights are so heavy-tailed that a few samples dominate.
    :ivar psis_values: the PSIS-smoothed estimate for each point (None when PSIS
        was not run).
    :ivar float khat_threshold: :math:`\min(1 - 1/\log_{10} S,\ 0.7)` for S samples.
    :ivar log_weights: the ``(num_samples, N)`` log-weights, when asked to keep them.
    """

    values: torch.Tensor
    num_samples: int
    khat: torch.Tensor | None = None
    psis_values: torch.Tensor | None = None
    khat_threshold: float | None = None
    log_weights: torch.Tensor | None = None

    @property
    def fraction_unreliable(self) -> float:
        """The fraction of points whose k-hat exceeds :attr:`khat_threshold`."""
        if self.khat is None:
            raise ValueError("this estimate has no PSIS diagnostic (log_likelihood(psis=True))")
        return (self.khat > self.khat_threshold).double().mean().item()

    @property
    def psis_mean(self) -> float:
        """The average PSIS-smoothed estimate over data points."""
        if self.psis_values is None:
            raise ValueError("this estimate has no PSIS diagnostic (log_likelihood(psis=True))")
        return self.psis_values.mean().item()

    @property
    def mean(self) -> float:
        """The average over data points (nats per point)."""
        return self.values.mean().item()

    @property
    def stderr(self) -> float:
        """Standard error of :attr:`mean` over data points."""
        n = self.values.numel()
        return (self.values.std() / math.sqrt(n)).item() if n > 1 else float("nan")

    def __repr__(self) -> str:
        psis = ""
        if self.khat is not None:
            psis = (
                f", psis_mean={self.psis_mean:.4f}, "
                f"khat>{self.khat_threshold:.2f}: {self.fraction_unreliable:.1%}"
            )
        return (
            f"LogLikelihood(mean={self.mean:.4f}, stderr={self.stderr:.4f}, "
            f"points={self.values.numel()}, num_samples={self.num_samples}{psis})"
        )


def _args(x, c):
    return (x,) if c is None else (x, c)


def _per_batch(x, c, batch_size):
    for start in range(0, x.shape[0], batch_size):
        stop = start + batch_size
        yield _args(x[start:stop], None if c is None else c[start:stop])


def _setup(model, data, c, batch_size, what, needs_density):
    pair = as_pair(model)
    x, c = prepare(data, pair.module, c)
    batch_size = positive_int("batch_size", batch_size)
    probe = _args(x[:2], None if c is None else c[:2])
    with torch.no_grad():
        if needs_density:
            importance.check_guide_has_density(pair.guide, probe, what)
        nesting = importance.max_plate_nesting(pair.model, pair.guide, probe)
    return pair, x, c, batch_size, nesting


@contextmanager
def _eval_mode(module):
    """The module in eval mode (no dropout) for the block, restored afterwards."""
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        yield
    finally:
        if module is not None:
            module.train(was_training)


def elbo(model, data, num_particles: int = 1, c=None, batch_size: int = 1000) -> torch.Tensor:
    """The ELBO of each data point, averaged over ``num_particles`` draws from the guide.

    For a deterministic autoencoder (a Delta guide) this is the per-point
    objective, the negative of its training loss.

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_particles: draws per point.
    :param c: conditions, one row per point, for conditional models.
    :param int batch_size: points evaluated at once.
    :returns: a tensor of shape ``(N,)``.
    """
    num_particles = positive_int("num_particles", num_particles)
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "elbo", False)
    out = []
    with torch.no_grad(), _eval_mode(pair.module):
        for args in _per_batch(x, c, batch_size):
            lw = importance.log_weights(pair.model, pair.guide, args, num_particles, nesting)
            out.append(lw.mean(0))
    return torch.cat(out)


def log_likelihood(
    model,
    data,
    num_samples: int = 5000,
    chunk_size: int = 500,
    batch_size: int = 100,
    c=None,
    psis: bool | None = None,
    keep_log_weights: bool = False,
) -> LogLikelihood:
    r"""The importance-weighted estimate of log p(x) for each data point, with the
    Pareto-smoothed importance sampling (PSIS) diagnostic of its weights.

    PSIS (Vehtari et al. 2024) fits a generalized Pareto distribution to the
    largest weights :math:`w^{(s)} = p(x, z^{(s)})/q(z^{(s)}|x)` of each point: its
    shape :math:`\hat k` says how heavy their tail is. For
    :math:`\hat k < \min(1 - 1/\log_{10} S, 0.7)` the estimate is reliable; above,
    the variance of the weights is effectively infinite, a handful of draws
    decide the estimate, and it is likely too low. The PSIS-smoothed estimate
    replaces the largest weights by quantiles of the fitted tail
    (``result.psis_values``). A warning in words is issued when more than 10% of
    the points exceed the threshold.

    Refuses models whose guide is a Delta distribution: a point mass has no
    density to weight by.

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_samples: importance samples S per point.
    :param int chunk_size: samples drawn at once (memory grows with
        ``chunk_size * batch_size``).
    :param int batch_size: points evaluated at once.
    :param c: conditions, one row per point, for conditional models.
    :param bool psis: compute k-hat and the PSIS-smoothed estimate (needs
        ``num_samples >= 25``); None computes them whenever ``num_samples >= 25``.
        The S log-weights of a batch of points are then held at once.
    :param bool keep_log_weights: return all ``(num_samples, N)`` log-weights in
        ``result.log_weights``.
    :rtype: LogLikelihood
    """
    num_samples = positive_int("num_samples", num_samples)
    chunk_size = positive_int("chunk_size", chunk_size)
    if psis is None:
        psis = num_samples >= PSIS_MIN_SAMPLES
    elif psis and num_samples < PSIS_MIN_SAMPLES:
        raise ValueError(
            f"psis=True needs num_samples >= {PSIS_MIN_SAMPLES} to fit the tail of the "
            f"weights, got num_samples={num_samples}"
        )
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "log_likelihood", True)
    keep = psis or keep_log_weights
    out, khats, smoothed, kept = [], [], [], []
    with torch.no_grad(), _eval_mode(pair.module):
        for args in _per_batch(x, c, batch_size):
            running, chunks = None, []
            for start in range(0, num_samples, chunk_size):
                k = min(chunk_size, num_samples - start)
                lw = importance.log_weights(pair.model, pair.guide, args, k, nesting)
                if keep:
                    chunks.append(lw)
                chunk = torch.logsumexp(lw, 0)
                running = chunk if running is None else torch.logaddexp(running, chunk)
            out.append(running - math.log(num_samples))
            if keep:
                lw = torch.cat(chunks)
                if keep_log_weights:
                    kept.append(lw)
                if psis:
                    khat, values = _psis(lw)
                    khats.append(khat)
                    smoothed.append(values)
    result = LogLikelihood(torch.cat(out), num_samples)
    if keep_log_weights:
        result.log_weights = torch.cat(kept, 1)
    if psis:
        result.khat = torch.cat(khats)
        result.psis_values = torch.cat(smoothed)
        result.khat_threshold = khat_threshold(num_samples)
        _warn_khat(result)
    return result


def reconstruction_error(model, data, c=None, batch_size: int = 1000) -> torch.Tensor:
    """Squared error ``||x - E[x|z]||^2`` per point, z the code of x."""
    x = prepare(data, model, c, check_support=False)[0]
    out = []
    with torch.no_grad(), _eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            cb = None if c is None else c[start : start + batch_size].to(xb.device)
            diff = xb - model.reconstruct(xb, cb)
            out.append(diff.reshape(diff.shape[0], -1).pow(2).sum(-1))
    return torch.cat(out)


# -- Pareto-smoothed importance sampling ----------------------------------------------

#: fewest importance samples for which a Pareto tail can be fitted to each point's weights
PSIS_MIN_SAMPLES = 25

#: fraction of unreliable points (k-hat above the threshold) above which a warning is issued
KHAT_WARN_FRACTION = 0.1


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz
    return arviz


def khat_threshold(num_samples: int) -> float:
    r"""The k-hat above which an importance-sampling estimate from S draws is
    unreliable, :math:`\min(1 - 1/\log_{10} S,\ 0.7)` (Vehtari et al. 2024)."""
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7)


def psis_diagnostic(log_weights: torch.Tensor):
    r"""Pareto-smoothed importance sampling of per-point log-weights, by
    :func:`arviz.psislw`.

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
    khat = torch.full_like(plain, -math.inf, dtype=torch.float64, device="cpu")
    estimate = plain.detach().to("cpu", torch.float64).clone()
    rows = (~flat).nonzero().reshape(-1).cpu()
    if rows.numel():
        lw = log_weights.detach()[:, rows.to(log_weights.device)].to("cpu", torch.float64)
        # normalize=False keeps the weights' scale: the smoothed log-weights themselves.
        with np.errstate(all="ignore"):
            smoothed, k = _arviz().psislw(lw.T.contiguous().numpy(), normalize=False)
        k = torch.as_tensor(k, dtype=torch.float64)
        smoothed = torch.as_tensor(smoothed).logsumexp(-1) - math.log(num_samples)
        # a failed tail fit leaves the weights unsmoothed and counts as unreliable
        failed = ~torch.isfinite(smoothed)
        smoothed[failed] = estimate[rows][failed]
        k[torch.isnan(k)] = math.inf
        khat[rows], estimate[rows] = k, smoothed
    like = log_weights.new_empty(())
    return khat.to(like), estimate.to(like)


def _warn_khat(result: LogLikelihood) -> None:
    fraction = result.fraction_unreliable
    if fraction > KHAT_WARN_FRACTION:
        warnings.warn(
            f"For {fraction:.0%} of the {result.values.numel()} data points the importance "
            f"weights are too heavy-tailed to trust (Pareto k-hat above "
            f"{result.khat_threshold:.2f}): their log-likelihood estimates rest on a few of the "
            f"{result.num_samples} samples and are probably too low. More samples help little; "
            "a guide closer to the posterior (e.g. trained with loss='iwae') helps. See "
            "result.khat for each point and result.psis_values for the smoothed estimates.",
            UserWarning,
            stacklevel=3,
        )


# -- helpers for site "z" ---------------------------------------------------------------


def _latent_site(trace, what: str):
    site = trace.nodes.get("z")
    if site is None or site["type"] != "sample" or site["is_observed"]:
        raise ValueError(f"{what} needs the guide to sample the latent at a site named 'z'")
    return site


def _guide_trace(guide, args):
    with poutine.block():
        return poutine.trace(guide).get_trace(*args)


def _prior_of(pair, args, what: str):
    """p(z) for the points of ``args``, batch shape ``(B,)``: the module's prior if it
    has one, else the model's distribution at site "z" (which must not depend on an
    enumerated site)."""
    prior = getattr(pair.module, "prior", None)
    n = args[0].shape[0]
    if isinstance(prior, torch.nn.Module):
        return prior((n,)) if len(args) == 1 else prior((n,), args[1])
    with poutine.block():
        guide_trace = poutine.trace(pair.guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(*args)
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and site["infer"].get("enumerate") == "parallel":
            raise ValueError(
                f"{what} needs p(z) in closed form, but the model's site {name!r} is enumerated; "
                "give the pair's module a .prior returning the marginal p(z)"
            )
    site = model_trace.nodes.get("z")
    if site is None or site["type"] != "sample":
        raise ValueError(f"{what} needs the model to sample the latent at a site named 'z'")
    return site["fn"]


# -- clustering -------------------------------------------------------------------------


def cluster(model, data, num_samples: int = 100, c=None, batch_size: int = 100) -> torch.Tensor:
    r"""The most probable mixture component of each data point,
    :math:`\arg\max_k p(k|x)`, for a model with a mixture prior.

    The posterior over components is estimated by importance sampling with the guide,

    .. math:: p(x, k) = \int p(k)\, p(z|k)\, p(x|z)\, dz
              \approx \frac1S \sum_s \frac{p(k)\,p(z^{(s)}|k)\,p(x|z^{(s)})}{q(z^{(s)}|x)},

    from the enumerated site of a :class:`~probae.priors.GaussianMixture` with
    ``enumerate=True`` (any model with one enumerated site), or from the
    components of a :class:`~pyro.distributions.MixtureSameFamily` at site "z" (the
    marginal mixture), where :math:`p(k)\,p(z|k) = p(z)\,p(k|z)`. Both read the same
    numbers from the same draws.

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_samples: importance samples per point.
    :param c: conditions, one row per point, for conditional models.
    :param int batch_size: points evaluated at once.
    :returns: a ``torch.long`` tensor of shape ``(N,)``.
    """
    num_samples = positive_int("num_samples", num_samples)
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "cluster", True)
    out = []
    with torch.no_grad(), _eval_mode(pair.module):
        for args in _per_batch(x, c, batch_size):
            guide_trace, model_trace = importance.traces(
                pair.model, pair.guide, args, num_samples, nesting
            )
            free, coupled, _ = importance.joint_terms(guide_trace, model_trace, nesting)
            if coupled is not None:
                if coupled.dim() != 3:
                    raise ValueError("cluster needs exactly one enumerated site in the model")
                joint = free + coupled  # (K, S, B)
            else:
                joint = free + _log_responsibilities(model_trace).movedim(-1, 0)
            out.append(joint.logsumexp(1).argmax(0))
    return torch.cat(out)


def _log_responsibilities(model_trace) -> torch.Tensor:
    """log p(k|z) at the model's site "z", shape ``(S, B, K)``."""
    site = model_trace.nodes.get("z")
    fn = site["fn"] if site is not None else None
    while isinstance(fn, dist.MaskedDistribution):
        fn = fn.base_dist
    if not isinstance(fn, torch.distributions.MixtureSameFamily):
        raise TypeError(
            "cluster needs a mixture prior: a priors.GaussianMixture (either form), or a model "
            "whose site 'z' is a MixtureSameFamily or which enumerates a discrete site, got "
            f"{type(fn).__name__} at site 'z'"
        )
    z = site["value"]
    log_mix = fn.mixture_distribution.logits.log_softmax(-1)
    log_comp = fn.component_distribution.log_prob(z.unsqueeze(-1 - fn.event_dim))
    joint = log_mix + log_comp
    return joint - joint.logsumexp(-1, keepdim=True)


def clustering_accuracy(assignments, labels) -> float:
    """Unsupervised clustering accuracy: the fraction of points whose cluster, under
    the one-to-one matching of clusters to labels that maximizes it (the Hungarian
    algorithm), is their label. Points in clusters left unmatched count as errors.

    :param assignments: cluster of each point (integers), shape ``(N,)``.
    :param labels: true label of each point (integers), shape ``(N,)``.
    """
    from scipy.optimize import linear_sum_assignment

    assignments = torch.as_tensor(assignments).reshape(-1).long().cpu()
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    if assignments.shape != labels.shape or assignments.numel() == 0:
        raise ValueError(
            "assignments and labels must be non-empty with one entry per point, got "
            f"{tuple(assignments.shape)} and {tuple(labels.shape)}"
        )
    if assignments.min() < 0 or labels.min() < 0:
        raise ValueError("assignments and labels must be non-negative integers")
    _, a = assignments.unique(return_inverse=True)
    _, b = labels.unique(return_inverse=True)
    counts = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.long)
    counts.index_put_((a, b), torch.ones_like(a), accumulate=True)
    rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
    return counts[rows, cols].sum().item() / labels.numel()


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
    num_samples = positive_int("num_samples", num_samples)
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


def _factors(fn):
    """The per-coordinate distribution of a factorized event-dim-1 distribution."""
    while isinstance(fn, dist.MaskedDistribution):
        fn = fn.base_dist
    if isinstance(fn, torch.distributions.Independent) and fn.reinterpreted_batch_ndims == 1:
        if fn.base_dist.event_shape == ():
            return fn.base_dist
    return None


def _coordinate_log_prob(prior, z):
    """log p_j(z_j) for every coordinate j of z, or None if unavailable."""
    base = _factors(prior)
    if base is not None:
        return base.log_prob(z)
    fn = prior
    while isinstance(fn, dist.MaskedDistribution):
        fn = fn.base_dist
    if isinstance(fn, torch.distributions.MixtureSameFamily):
        comp = _factors(fn.component_distribution)
        if comp is not None:
            log_mix = fn.mixture_distribution.logits.log_softmax(-1).unsqueeze(-1)
            return (log_mix + comp.log_prob(z.unsqueeze(-2))).logsumexp(-2)
    return None


def _per_dimension_kl(posterior, prior, num_samples):
    q = _factors(posterior)
    if q is None:
        return None
    p = _factors(prior)
    if p is not None:
        try:
            return torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            pass
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
    num_samples = positive_int("num_samples", num_samples)
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
                trace = poutine.trace(pair.guide).get_trace(*args)
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


def _mean_and_stderr(values: torch.Tensor):
    """Mean of ``(S, N)`` draws and its Monte Carlo standard error: the spread of the
    draws within each point (the data set is fixed), or across all draws if S = 1."""
    values = values.double()
    s, n = values.shape
    if s > 1:
        stderr = (values.var(0).sum() / s).sqrt() / n
    else:
        stderr = values.std() / math.sqrt(n) if n > 1 else values.new_tensor(float("nan"))
    return values.mean().item(), stderr.item()


# -- bits per dimension ----------------------------------------------------------------


def bits_per_dim(
    model, data, num_samples: int = 5000, levels: int | None = None, estimate=None, **kwargs
) -> float:
    r"""The negative log-likelihood in bits per data dimension,

    .. math:: \mathrm{bpd} = \frac{-\log \hat p(x) + D \log L}{D \log 2},

    averaged over points, with :math:`\log \hat p(x)` the IWAE estimate of
    :func:`log_likelihood` and D the number of dimensions (pixels) of x. For a
    likelihood of discrete values (Bernoulli pixels) :math:`\hat p` is a
    probability and ``levels=None`` (no :math:`D \log L` term). For a density over
    values in [0, 1] that were quantized to L levels (L = 256 for 8-bit images),
    pass ``levels=L``: the density times the bin width :math:`1/L` per dimension is
    the probability of the pixel values, the usual convention for image models.

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_samples: importance samples per point.
    :param int levels: quantization levels L of a continuous density, or None.
    :param LogLikelihood estimate: a result of :func:`log_likelihood` on the same
        data, to reuse instead of sampling again.
    :param kwargs: passed to :func:`log_likelihood` (``batch_size``, ``c``, ...).
    """
    x = _data_tensor(data)
    if levels is not None and (
        isinstance(levels, bool) or not isinstance(levels, int) or levels < 2
    ):
        raise ValueError(f"levels must be an integer >= 2 or None, got {levels!r}")
    if estimate is None:
        estimate = log_likelihood(model, data, num_samples=num_samples, **kwargs)
    elif not isinstance(estimate, LogLikelihood):
        raise TypeError(f"estimate must be a LogLikelihood, got {type(estimate).__name__}")
    elif estimate.values.numel() != x.shape[0]:
        raise ValueError(f"estimate has {estimate.values.numel()} points but data has {x.shape[0]}")
    dims = x[0].numel()
    nats = -estimate.mean + (dims * math.log(levels) if levels is not None else 0.0)
    return nats / (dims * math.log(2.0))


def _data_tensor(data):
    from ..data import as_tensor

    x = as_tensor(data)
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"data must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    return x


# -- ArviZ -----------------------------------------------------------------------------


def to_inference_data(model, data, num_samples: int = 1000, c=None, batch_size: int = 100):
    r"""Draws from the guide and their importance log-weights as an
    :class:`arviz.InferenceData`, so ArviZ's plots and diagnostics apply to a
    trained model.

    - ``posterior``: ``z`` with dims ``(chain, draw, point, latent)``, the draws
      :math:`z^{(s)} \sim q(z|x_n)` (one chain);
    - ``sample_stats``: ``log_weight`` with dims ``(chain, draw, point)``, the
      importance log-weights :math:`\log p(x_n, z^{(s)}) - \log q(z^{(s)}|x_n)`;
      resampling the draws in proportion to the weights gives draws from the exact
      posterior p(z|x) as S grows;
    - ``observed_data``: ``x``, flattened to dims ``(point, pixel)``.

    For example::

        idata = evaluate.to_inference_data(vae, test, num_samples=1000)
        lw = idata.sample_stats.log_weight.stack(__sample__=("chain", "draw"))
        _, khat = arviz.psislw(lw, normalize=False)
        arviz.plot_khat(khat)
        arviz.plot_posterior(idata, var_names=["z"], coords={"point": [0]})

    Memory grows with ``num_samples * N * z_dim``.

    :param model: a probae model or a ``(model, guide)`` pair whose guide samples site "z".
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_samples: draws per point.
    :param c: conditions, one row per point, for conditional models.
    :param int batch_size: points evaluated at once.
    """
    num_samples = positive_int("num_samples", num_samples)
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "to_inference_data", True)
    draws, weights = [], []
    with torch.no_grad(), _eval_mode(pair.module):
        for args in _per_batch(x, c, batch_size):
            traces = importance.traces(pair.model, pair.guide, args, num_samples, nesting)
            z = _latent_site(traces[0], "to_inference_data")["value"]
            draws.append(z.reshape(num_samples, z.shape[1], -1))
            weights.append(
                importance.log_weights(
                    pair.model, pair.guide, args, num_samples, nesting, trace_pair=traces
                )
            )
    z = torch.cat(draws, 1).cpu().numpy()[None]
    log_weight = torch.cat(weights, 1).cpu().numpy()[None]
    n, d = z.shape[2], z.shape[3]
    return _arviz().from_dict(
        posterior={"z": z},
        sample_stats={"log_weight": log_weight},
        observed_data={"x": x.reshape(n, -1).cpu().numpy()},
        coords={"point": list(range(n)), "latent": list(range(d))},
        dims={"z": ["point", "latent"], "log_weight": ["point"], "x": ["point", "pixel"]},
    )


def linear_probe(
    model,
    train,
    test,
    train_y=None,
    test_y=None,
    batch_size: int = 1000,
    max_iter: int = 2000,
) -> float:
    r"""Feature quality: the test accuracy of a linear classifier on the codes.

    A multinomial logistic regression (scikit-learn, L2-regularized, on standardized
    features) is fitted to the codes of ``train`` and their labels, and scored on the
    codes of ``test``. The same call measures baselines: pass a callable such as
    ``lambda x: x`` (raw pixels) or a fitted projection instead of a model.

    :param model: a probae model (its :meth:`encode` gives the features) or a callable
        mapping a tensor ``(N, ...)`` to features ``(N, F)``.
    :param train: a :class:`~probae.data.Dataset` with labels, or a tensor with ``train_y``.
    :param test: the same, for scoring.
    :param train_y: labels of ``train`` when it is a tensor (or to override ``train.y``).
    :param test_y: labels of ``test`` likewise.
    :param int batch_size: points encoded at once.
    :param int max_iter: iterations of the logistic-regression solver.
    :returns: the fraction of ``test`` classified correctly.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    batch_size = positive_int("batch_size", batch_size)
    max_iter = positive_int("max_iter", max_iter)
    if hasattr(model, "encode"):
        module = model if isinstance(model, torch.nn.Module) else None
        features = model.encode
    elif callable(model):
        module, features = None, model
    else:
        raise TypeError(
            "model must be a probae model (with .encode) or a callable x -> features, "
            f"got {type(model).__name__}"
        )

    def codes_and_labels(data, labels, name):
        if labels is None:
            labels = getattr(data, "y", None)
        if labels is None:
            raise ValueError(f"{name} has no labels: pass a labelled Dataset or {name}_y=")
        x = prepare(data, module, name=name, check_support=False)[0]
        labels = torch.as_tensor(labels).reshape(-1)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(
                f"{name}_y must have one label per point: {name} has {x.shape[0]} points, "
                f"{name}_y has {labels.shape[0]}"
            )
        with torch.no_grad(), _eval_mode(module):
            z = torch.cat([features(xb).reshape(xb.shape[0], -1) for xb in x.split(batch_size)])
        return z.double().cpu().numpy(), labels.cpu().numpy()

    z_train, y_train = codes_and_labels(train, train_y, "train")
    z_test, y_test = codes_and_labels(test, test_y, "test")
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    # A small problem: threaded BLAS spends more time synchronizing than computing.
    with threadpool_limits(limits=1):
        classifier.fit(z_train, y_train)
        return float(classifier.score(z_test, y_test))


def _condition(model, data, c, condition, what):
    from .. import data as _data

    c = _data.resolve_condition(data, condition, c, getattr(model, "c_shape", None))
    if c is None:
        raise ValueError(
            f"{what} needs a condition: data with a .c field (data.quadrants), c=, or "
            "condition='label'"
        )
    return c


def conditional_log_likelihood(
    model,
    data,
    num_samples: int = 1000,
    c=None,
    condition=None,
    chunk_size: int = 500,
    batch_size: int = 100,
) -> LogLikelihood:
    r"""The importance-weighted estimate of :math:`\log p(x|c)` for each data point,

    .. math:: \log \hat p(x|c) = \log \frac1S \sum_{s=1}^S
              \frac{p(z^{(s)}|c)\, p(x|z^{(s)}, c)}{q(z^{(s)}|x, c)},
              \quad z^{(s)} \sim q(z|x, c),

    with the recognition network as proposal and the conditional prior as prior;
    it rises to :math:`\log p(x|c)` as S grows. Drawn in chunks, as
    :func:`log_likelihood`.

    :param model: a conditional probae model (CVAE, ConditionalBaseline) or a
        ``(model, guide)`` pair taking ``(x, c)``.
    :param data: a :class:`~probae.data.ConditionalDataset` (its ``c`` is used), a
        :class:`~probae.data.Dataset` or a tensor.
    :param int num_samples: importance samples S per point.
    :param c: conditions, one row per point (instead of the data's own).
    :param condition: ``"label"`` for one-hot labels of ``data.y``, or a field name.
    :param int chunk_size: samples drawn at once.
    :param int batch_size: points evaluated at once.
    :rtype: LogLikelihood
    """
    c = _condition(model, data, c, condition, "conditional_log_likelihood")
    return log_likelihood(
        model, data, num_samples=num_samples, chunk_size=chunk_size, batch_size=batch_size, c=c
    )


def conditional_elbo(
    model, data, num_particles: int = 1, c=None, condition=None, batch_size: int = 1000
) -> torch.Tensor:
    r"""The conditional ELBO of each point (beta = 1),

    .. math:: \mathcal L(x, c) = \mathbb E_{q(z|x, c)}\big[\log p(x|z, c)
              + \log p(z|c) - \log q(z|x, c)\big],

    a Monte Carlo average over ``num_particles`` draws: the quantity Pyro's CVAE
    tutorial reports (as its negative) with 10 particles.

    Arguments as :func:`conditional_log_likelihood`; returns a tensor of shape ``(N,)``.
    """
    c = _condition(model, data, c, condition, "conditional_elbo")
    return elbo(model, data, num_particles=num_particles, c=c, batch_size=batch_size)
