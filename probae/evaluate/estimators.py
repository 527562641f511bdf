r"""How well a model explains each data point: the ELBO, the importance-weighted
estimate of :math:`\log p(x)` (Burda et al., 2016) with its PSIS diagnostic, the
reconstruction error, bits per dimension, and the conditional forms
:math:`\log p(x|c)` and the conditional ELBO.

All of them are importable from :mod:`probae.evaluate`.

**References**

[1] `Importance Weighted Autoencoders`, Yuri Burda, Roger Grosse, Ruslan
Salakhutdinov (ICLR 2016)
"""

from __future__ import annotations

import math

import torch

from .. import _progress, _threads, _validate, importance
from .._common import positive_int, prepare
from ._util import _condition, _eval_mode, _per_batch, _setup, _ValidateOnce
from .ais import ais_log_likelihood
from .diagnostics import PSIS_MIN_SAMPLES, _psis, _warn_khat, khat_threshold
from .results import LogLikelihood

__all__ = [
    "LogLikelihood",
    "elbo",
    "log_likelihood",
    "reconstruction_error",
    "conditional_log_likelihood",
    "conditional_elbo",
]


def elbo(
    model,
    data,
    num_particles: int = 1,
    c=None,
    batch_size: int = 1000,
    plate=None,
    threads: int | None = None,
) -> torch.Tensor:
    """The ELBO of each data point, averaged over ``num_particles`` draws from the guide.

    For a deterministic autoencoder (a Delta guide) this is the per-point
    objective, the negative of its training loss.

    Each point's log-weight sums every site of that point: several latent sites,
    sites in nested plates, the steps of a ``pyro.markov`` sequence. The model's
    sites marked for enumeration are summed out exactly; guide sites marked for
    enumeration are sampled from the guide (said in a notice). A pair that does not
    broadcast over a sample dimension is run once per particle (said in a notice).

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset`, a tensor of shape ``(N, ...)``
        (``(N,)``: N scalar points), a torch Dataset or DataLoader, or any iterable of
        the pair's own batches (a list, a DataLoader with its own ``collate_fn``) whose
        items are tuples (positional arguments), dicts (keyword arguments) or tensors,
        passed to model and guide as ``SVI.step(*args, **kwargs)`` passes them (see
        :mod:`probae.batches`); per-point results come in the order of the batches.
    :param int num_particles: draws per point.
    :param c: conditions, one row per point, for conditional models.
    :param int batch_size: points evaluated at once (data given as tensors or data sets).
    :param str plate: the name of the pair's data plate; None finds it: the outermost
        plate that holds every sample site.
    :param int threads: CPU threads: None picks one for a small network and leaves
        PyTorch's setting otherwise (as :func:`probae.fit`); an integer sets the count.
    :returns: a tensor of shape ``(N,)``.
    """
    num_particles = _validate.samples("num_particles", num_particles)
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "elbo", False, True)
    out = []
    checks = _ValidateOnce(pair.module)
    rows = batch_size * num_particles
    with torch.no_grad(), _eval_mode(pair.module), _threads.for_call(threads, pair.module, rows):
        for args in _per_batch(x, c, batch_size):
            with checks():
                lw = importance.log_weights(
                    pair.model,
                    pair.guide,
                    args,
                    num_particles,
                    nesting,
                    vectorized=pair.vectorized,
                    plate=plate,
                )
            out.append(lw.mean(0))
    return torch.cat(out)


def log_likelihood(
    model,
    data,
    num_samples: int = 5000,
    chunk_size: int | None = None,
    batch_size: int | None = None,
    c=None,
    psis: bool | None = None,
    keep_log_weights: bool = False,
    method: str = "iwae",
    plate=None,
    threads: int | None = None,
    progress: bool | None = None,
    **ais_options,
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
    density to weight by. Each weight sums every site of its point, sums the model's
    enumerated sites out exactly and samples the guide's enumerable sites (said in a
    notice); a pair that does not broadcast over a sample dimension is run once per
    sample, with the same draws (said in a notice).

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: the points, in any form :func:`elbo` takes (the pair's own batches too).
    :param int num_samples: importance samples S per point.
    :param int chunk_size: samples drawn at once (memory grows with
        ``chunk_size * batch_size``); None picks it with ``batch_size`` (see
        :func:`pass_sizes`): each pass of the networks gets a few thousand rows, which
        on a CPU runs several times faster than one of tens of thousands.
    :param int batch_size: points evaluated at once; None picks it (see ``chunk_size``).
    :param c: conditions, one row per point, for conditional models.
    :param bool psis: compute k-hat and the PSIS-smoothed estimate (needs
        ``num_samples >= 25``); None computes them whenever ``num_samples >= 25``.
        The S log-weights of a batch of points are then held at once.
    :param bool keep_log_weights: return all ``(num_samples, N)`` log-weights in
        ``result.log_weights``.
    :param str method: ``"iwae"``, or ``"ais"`` for annealed importance sampling
        (:func:`probae.evaluate.ais_log_likelihood`, which takes ``ais_options`` such as
        ``num_chains``, ``steps`` and ``transition``; ``batch_size``, ``c`` and
        ``progress`` pass on).
    :param str plate: the name of the pair's data plate; None finds it.
    :param int threads: CPU threads (see :func:`elbo`).
    :param bool progress: show progress over the points (True or None): a bar in a
        terminal or a notebook, elsewhere a plain line every 10 s once it runs that
        long; False shows nothing.
    :rtype: LogLikelihood
    """
    if method == "ais":
        if batch_size is not None:
            ais_options["batch_size"] = batch_size
        return ais_log_likelihood(model, data, c=c, progress=progress, **ais_options)
    if method != "iwae":
        raise ValueError(f"method must be 'iwae' or 'ais', got {method!r}")
    if ais_options:
        raise TypeError(f"log_likelihood got unexpected arguments {sorted(ais_options)}")
    num_samples = _validate.samples("num_samples", num_samples)
    if chunk_size is not None:
        chunk_size = positive_int("chunk_size", chunk_size)
    if psis is None:
        psis = num_samples >= PSIS_MIN_SAMPLES
    elif psis and num_samples < PSIS_MIN_SAMPLES:
        raise ValueError(
            f"psis=True needs num_samples >= {PSIS_MIN_SAMPLES} to fit the tail of the "
            f"weights, got num_samples={num_samples}"
        )
    _progress.check(progress)
    pair, x, c, given_batch, nesting = _setup(
        model, data, c, 1 if batch_size is None else batch_size, "log_likelihood", True, True
    )
    point_size, device_type = _point_size(x), _device_type(x)
    auto_chunk, auto_batch = pass_sizes(num_samples, point_size, device_type)
    batch_size = given_batch if batch_size is not None else auto_batch
    keep = psis or keep_log_weights
    out, khats, smoothed, kept, pending = [], [], [], [], []
    checks = _ValidateOnce(pair.module)
    rows = auto_chunk * auto_batch if chunk_size is None else chunk_size * batch_size
    total = None if getattr(x, "program", False) else len(x)  # a program's: not known
    bar = _progress.counter(total, "probae IWAE", "point", progress)
    with (
        torch.no_grad(),
        _eval_mode(pair.module),
        _threads.for_call(threads, pair.module, rows),
        bar,
    ):
        for args in _per_batch(x, c, batch_size):
            running, chunks = None, []
            drawn = chunk_size or (
                auto_chunk  # a program's own batch: its points share the pass
                if not getattr(x, "program", False)
                else pass_sizes(num_samples, point_size * (importance.points(args) or 1))[0]
            )
            for start in range(0, num_samples, drawn):
                k = min(drawn, num_samples - start)
                with checks():
                    lw = importance.log_weights(
                        pair.model,
                        pair.guide,
                        args,
                        k,
                        nesting,
                        vectorized=pair.vectorized,
                        plate=plate,
                    )
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
                    pending.append(lw)
                    if sum(w.shape[1] for w in pending) >= PSIS_POINTS:
                        _smooth(pending, khats, smoothed)
            bar.update(importance.points(args) or 0)
        if pending:
            _smooth(pending, khats, smoothed)
    result = LogLikelihood(torch.cat(out), num_samples)
    if keep_log_weights:
        result.log_weights = torch.cat(kept, 1)
    if psis:
        result.khat = torch.cat(khats)
        result.psis_values = torch.cat(smoothed)
        result.khat_threshold = khat_threshold(num_samples)
        _warn_khat(result)
    return result


#: elements of the data that one pass of the networks takes, by device type: on a CPU a
#: pass of about 2**21 values (a few thousand MNIST rows) keeps the activations in cache;
#: 50,000 rows (100 points x 500 samples) ran 5-9x slower per row
PASS_ELEMENTS = {"cpu": 2**21, "cuda": 2**25}


def pass_sizes(num_samples: int, point_size: int, device_type: str = "cpu"):
    """``(chunk_size, batch_size)`` for importance sampling: samples drawn at once and
    points evaluated at once, so that one pass of the networks takes about
    ``PASS_ELEMENTS[device_type]`` values of the data (``point_size`` values per point):
    all samples of a point in one chunk where they fit, and as many points as then fit.
    """
    rows = max(1, PASS_ELEMENTS.get(device_type, PASS_ELEMENTS["cuda"]) // max(1, point_size))
    chunk = min(num_samples, rows)
    return chunk, max(1, rows // chunk)


def _point_size(x) -> int:
    """Values per data point of a batch source (a tensor or a stream)."""
    if isinstance(x, torch.Tensor):
        return x[0].numel() if x.dim() > 1 else 1
    shape = getattr(x, "x_shape", None)
    if shape is not None:
        return max(1, int(torch.Size(shape).numel()))
    args = x.head() if getattr(x, "program", False) else x.head(1)[:1]
    values = (*args, *getattr(args, "kwargs", {}).values())
    first = next((a for a in values if torch.is_tensor(a)), None)
    return first[0].numel() if first is not None and first.dim() > 1 else 1


def _device_type(x) -> str:
    device = getattr(x, "device", None)
    return device.type if device is not None else "cpu"


#: points whose weights one PSIS fit takes at once: the tail fits of many small batches
#: cost more in calls than in arithmetic
PSIS_POINTS = 256


def _smooth(pending: list, khats: list, smoothed: list) -> None:
    """PSIS of the log-weights of the batches in ``pending`` (emptied), in one call."""
    khat, values = _psis(torch.cat(pending, 1))
    khats.append(khat)
    smoothed.append(values)
    pending.clear()


def reconstruction_error(model, data, c=None, batch_size: int = 1000) -> torch.Tensor:
    """Squared error ``||x - E[x|z]||^2`` per point, z the code of x."""
    batch_size = positive_int("batch_size", batch_size)
    x = prepare(data, model, c, check_support=False)[0]
    out = []
    with torch.no_grad(), _eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            cb = None if c is None else c[start : start + batch_size].to(xb.device)
            diff = xb - model.reconstruct(xb, cb)
            out.append(diff.reshape(diff.shape[0], -1).pow(2).sum(-1))
    return torch.cat(out)


# -- conditional models ----------------------------------------------------------------


def conditional_log_likelihood(
    model,
    data,
    num_samples: int = 1000,
    c=None,
    condition=None,
    chunk_size: int | None = None,
    batch_size: int | None = None,
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
    :param int chunk_size: samples drawn at once (None: see :func:`log_likelihood`).
    :param int batch_size: points evaluated at once (None: see :func:`log_likelihood`).
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
