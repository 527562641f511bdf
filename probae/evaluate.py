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

**References**

[1] `Importance Weighted Autoencoders`, Yuri Burda, Roger Grosse, Ruslan
Salakhutdinov (ICLR 2016)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from . import importance
from ._common import as_pair, positive_int, prepare

__all__ = [
    "LogLikelihood",
    "conditional_elbo",
    "conditional_log_likelihood",
    "elbo",
    "linear_probe",
    "log_likelihood",
    "reconstruction_error",
]


@dataclass
class LogLikelihood:
    """An importance-weighted log-likelihood estimate.

    :ivar torch.Tensor values: the estimate for each data point, in nats.
    :ivar int num_samples: importance samples per point.
    """

    values: torch.Tensor
    num_samples: int

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
        return (
            f"LogLikelihood(mean={self.mean:.4f}, stderr={self.stderr:.4f}, "
            f"points={self.values.numel()}, num_samples={self.num_samples})"
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
) -> LogLikelihood:
    """The importance-weighted estimate of log p(x) for each data point.

    Refuses models whose guide is a Delta distribution: a point mass has no
    density to weight by.

    :param model: a probae model or a ``(model, guide)`` pair.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_samples: importance samples S per point.
    :param int chunk_size: samples drawn at once (memory grows with
        ``chunk_size * batch_size``).
    :param int batch_size: points evaluated at once.
    :param c: conditions, one row per point, for conditional models.
    :rtype: LogLikelihood
    """
    num_samples = positive_int("num_samples", num_samples)
    chunk_size = positive_int("chunk_size", chunk_size)
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "log_likelihood", True)
    out = []
    with torch.no_grad(), _eval_mode(pair.module):
        for args in _per_batch(x, c, batch_size):
            running = None
            for start in range(0, num_samples, chunk_size):
                k = min(chunk_size, num_samples - start)
                lw = importance.log_weights(pair.model, pair.guide, args, k, nesting)
                chunk = torch.logsumexp(lw, 0)
                running = chunk if running is None else torch.logaddexp(running, chunk)
            out.append(running - math.log(num_samples))
    return LogLikelihood(torch.cat(out), num_samples)


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
    from . import data as _data

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
