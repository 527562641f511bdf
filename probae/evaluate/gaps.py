r"""The inference gap of an amortized posterior, split in two (Cremer et al. 2018).

For a model :math:`p(x, z)` and a guide :math:`q_\phi(z|x)` from a posterior family
:math:`\mathcal Q` (:mod:`probae.posteriors`), the gap between the log-likelihood and
the ELBO of a point x splits as

.. math::
    \log p(x) - \mathcal L[q] =
    \underbrace{\log p(x) - \mathcal L[q^*]}_{\text{approximation}}
    + \underbrace{\mathcal L[q^*] - \mathcal L[q]}_{\text{amortization}},
    \qquad q^* = \arg\max_{q' \in \mathcal Q} \mathcal L[q'],

with :math:`\mathcal L[q] = \mathbb E_{q}[\log p(x, z) - \log q(z)]`. The
*approximation gap* :math:`\mathrm{KL}(q^* \| p(z|x))` is what the family cannot
represent; the *amortization gap* is what the encoder loses by predicting q from x
instead of fitting it to x.

:math:`q^*` is found per point by optimizing that point's variational parameters,
the encoder's outputs :math:`(\mu, \log\sigma, h)`, from the encoder's own values
(the weights of a flow, shared by all points, are part of the family and held
fixed). All points of a batch are optimized at once with Adam on the sum of their
Monte Carlo ELBOs; Adam's step is elementwise, so each point's parameters follow
their own ELBO only. The stopping rule: every ``check_every`` steps, each point's
ELBO averaged over those steps is compared with its average over the previous
``check_every``; the optimization stops when no point improved by more than
``tolerance`` nats plus twice the Monte Carlo standard error of that difference
(each step's ELBO is an estimate from ``num_particles`` draws), or after
``max_steps``; the last improvements are reported with their standard errors. The
parameters of :math:`q^*` are then the average of the last window's iterates
(Polyak & Juditsky 1992), which removes most of the noise a constant step size
leaves in the last iterate. Both ELBOs are then estimated with
``num_samples`` fresh draws, the same standard-normal draws for :math:`q` and
:math:`q^*` (so their difference is estimated with less noise), and
:math:`\log p(x)` by AIS (:func:`probae.evaluate.ais_log_likelihood`) unless given.

**References**

[1] `Inference Suboptimality in Variational Autoencoders`, Chris Cremer, Xuechen
Li, David Duvenaud (ICML 2018)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import torch

from .. import _validate, importance
from .._common import positive_int
from ._util import _eval_mode, _per_batch, _setup
from .ais import ais_log_likelihood
from .estimators import LogLikelihood

__all__ = ["InferenceGaps", "inference_gaps"]


@dataclass(repr=False)
class InferenceGaps:
    r"""Per-point terms of the inference gap (see :mod:`probae.evaluate.gaps`).

    :ivar torch.Tensor log_likelihood: :math:`\log p(x)` of each point.
    :ivar torch.Tensor elbo_optimal: :math:`\mathcal L[q^*]`, the ELBO of the best
        member of the posterior family found for each point.
    :ivar torch.Tensor elbo_amortized: :math:`\mathcal L[q]`, the ELBO of the encoder's
        posterior.
    :ivar int steps: optimization steps taken by the batch that took the most.
    :ivar bool converged: every batch stopped by the rule, none at ``max_steps``.
    :ivar torch.Tensor last_improvement: each point's ELBO improvement (nats) over the
        last window of the optimization, the quantity the stopping rule reads.
    :ivar torch.Tensor last_improvement_stderr: the Monte Carlo standard error of each
        ``last_improvement``, from the draws of the optimization steps (a longer
        ``check_every`` or more ``num_particles`` lowers it, and with it the
        improvement the rule can miss).
    :ivar str stopping: the stopping rule, in words.
    """

    log_likelihood: torch.Tensor
    elbo_optimal: torch.Tensor
    elbo_amortized: torch.Tensor
    steps: int
    converged: bool
    last_improvement: torch.Tensor
    last_improvement_stderr: torch.Tensor
    stopping: str

    @property
    def approximation(self) -> torch.Tensor:
        r""":math:`\log p(x) - \mathcal L[q^*]` per point."""
        return self.log_likelihood - self.elbo_optimal

    @property
    def amortization(self) -> torch.Tensor:
        r""":math:`\mathcal L[q^*] - \mathcal L[q]` per point."""
        return self.elbo_optimal - self.elbo_amortized

    @property
    def total(self) -> torch.Tensor:
        r""":math:`\log p(x) - \mathcal L[q]` per point, the sum of the two gaps."""
        return self.log_likelihood - self.elbo_amortized

    def __repr__(self) -> str:
        def mean(t):
            return t.double().mean().item()

        return (
            f"InferenceGaps(points={self.log_likelihood.numel()}, "
            f"log_likelihood={mean(self.log_likelihood):.4f}, "
            f"elbo_optimal={mean(self.elbo_optimal):.4f}, "
            f"elbo_amortized={mean(self.elbo_amortized):.4f}, "
            f"approximation={mean(self.approximation):.4f}, "
            f"amortization={mean(self.amortization):.4f}, steps={self.steps}, "
            f"converged={self.converged})"
        )


def _family_of(model):
    family = getattr(model, "posterior_family", None)
    if family is None or not callable(getattr(model, "encoder", None)):
        raise TypeError(
            "inference_gaps needs a probae model whose guide draws z from "
            "posterior_family(encoder(x)) (VAE, CVAE and the disentangling VAEs), got "
            f"{type(model).__name__}: the variational parameters it optimizes per point are "
            "the encoder's outputs"
        )
    return family


def _guide_of(family, free):
    """A guide drawing ``"z"`` from the family at the free parameters
    ``(loc, log scale[, context])``, in a data plate of their batch size."""

    def guide(*args, **kwargs):
        params = (free[0], free[1].exp(), *free[2:])
        with pyro.plate("data", free[0].shape[0]):
            pyro.sample("z", family(params))

    return guide


#: draws per point made at once in the final estimates (memory grows with it)
CHUNK = 100


def _elbos(model, guide, args, num_samples, nesting, vectorized):
    """Each point's ELBO, the mean of ``num_samples`` log-weights drawn in chunks."""
    total, done = 0.0, 0
    while done < num_samples:
        size = min(CHUNK, num_samples - done)
        log_w = importance.log_weights(
            model, guide, args, size, nesting, vectorized=vectorized, plate="data"
        )
        total, done = total + log_w.sum(0), done + size
    return total / num_samples


@contextmanager
def _common_draws(args, seed):
    """A block whose random stream starts at ``seed`` and is restored after it."""
    with importance.preserve_rng(args):
        torch.manual_seed(seed)
        yield


def inference_gaps(
    model,
    data,
    c=None,
    log_likelihood=None,
    num_samples: int = 1000,
    num_particles: int = 16,
    max_steps: int = 2000,
    learning_rate: float = 0.01,
    tolerance: float = 0.01,
    check_every: int = 100,
    batch_size: int = 1000,
    ais=None,
    seed: int = 0,
) -> InferenceGaps:
    r"""The approximation and amortization gaps of each point (see the module).

    :param model: a probae model whose guide is its posterior family at the encoder's
        output (``VAE``, ``CVAE``, the disentangling VAEs; any posterior).
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param c: conditions, one row per point, for conditional models.
    :param log_likelihood: :math:`\log p(x)` of each point, a tensor ``(N,)`` or a
        :class:`~probae.evaluate.LogLikelihood` (an exact value, or an estimate already
        made); None runs :func:`~probae.evaluate.ais_log_likelihood`.
    :param int num_samples: draws per point for the final estimates of
        :math:`\mathcal L[q^*]` and :math:`\mathcal L[q]`.
    :param int num_particles: draws per point and step of the optimization.
    :param int max_steps: the most optimization steps.
    :param float learning_rate: Adam's step size.
    :param float tolerance: the stopping rule's threshold, in nats per point.
    :param int check_every: the window of the stopping rule, in steps.
    :param int batch_size: points optimized at once.
    :param dict ais: keyword arguments of :func:`~probae.evaluate.ais_log_likelihood`
        (``num_chains``, ``steps``, ``transition``, ``start``, ...).
    :param int seed: seed of the final estimates' draws (the random stream is
        restored afterwards).
    :rtype: InferenceGaps
    """
    family = _family_of(model)
    num_samples = _validate.samples("num_samples", num_samples)
    num_particles = _validate.samples("num_particles", num_particles)
    max_steps = positive_int("max_steps", max_steps)
    check_every = positive_int("check_every", check_every)
    learning_rate = _validate.positive("learning_rate", learning_rate)
    tolerance = _validate.positive("tolerance", tolerance)
    seed = _validate.integer("seed", seed, minimum=0, maximum=_validate.MAX_SEED)
    if ais is not None and not isinstance(ais, dict):
        raise TypeError(f"ais must be a dict of ais_log_likelihood options, got {ais!r}")
    pair, x, c, batch_size, nesting = _setup(
        model, data, c, batch_size, "inference_gaps", True, True
    )
    if not isinstance(x, torch.Tensor):
        raise TypeError("inference_gaps takes data as a tensor or a probae data set")
    if log_likelihood is None:
        log_likelihood = ais_log_likelihood(model, x, c=c, **(ais or {})).values
    elif isinstance(log_likelihood, LogLikelihood):
        log_likelihood = log_likelihood.values
    if not isinstance(log_likelihood, torch.Tensor) or log_likelihood.shape != (x.shape[0],):
        raise ValueError(
            f"log_likelihood must be a tensor of shape ({x.shape[0]},), one value per point, "
            f"got {getattr(log_likelihood, 'shape', type(log_likelihood).__name__)}"
        )
    optimal, amortized, improvements, stderrs = [], [], [], []
    steps_taken, converged = 0, True
    with _eval_mode(pair.module):
        for args in _per_batch(x, c, batch_size):
            with torch.no_grad():
                loc, scale, context = family.split(model.encoder(*args))
            start = [loc, scale.log()] + ([] if context is None else [context])
            free = [t.detach().clone().requires_grad_(True) for t in start]
            steps, done, last, last_stderr = _optimize(
                model.model,
                family,
                free,
                args,
                nesting,
                pair.vectorized,
                num_particles,
                max_steps,
                learning_rate,
                tolerance,
                check_every,
            )
            steps_taken, converged = max(steps_taken, steps), converged and done
            improvements.append(last)
            stderrs.append(last_stderr)
            with torch.no_grad():
                fixed = [t.detach() for t in free]
                encoded = [t.detach() for t in start]
                for params, out in ((encoded, amortized), (fixed, optimal)):
                    with _common_draws(args, seed):
                        guide = _guide_of(family, params)
                        out.append(
                            _elbos(model.model, guide, args, num_samples, nesting, pair.vectorized)
                        )
    rule = (
        f"Adam (learning rate {learning_rate:g}, {num_particles} draws per step) until no "
        f"point's ELBO, averaged over {check_every} steps, rose by more than {tolerance:g} "
        f"nats plus twice its standard error on the previous {check_every} steps, or "
        f"{max_steps} steps; q* at the average of the last window's iterates"
    )
    return InferenceGaps(
        log_likelihood=log_likelihood.to(optimal[0].device),
        elbo_optimal=torch.cat(optimal),
        elbo_amortized=torch.cat(amortized),
        steps=steps_taken,
        converged=converged,
        last_improvement=torch.cat(improvements),
        last_improvement_stderr=torch.cat(stderrs),
        stopping=rule,
    )


def _optimize(
    model,
    family,
    free,
    args,
    nesting,
    vectorized,
    num_particles,
    max_steps,
    learning_rate,
    tolerance,
    check_every,
):
    """Adam on the free parameters of one batch, which end as the average of the last
    window's iterates; returns ``(steps, converged, last window's improvement per
    point)``."""
    optimizer = torch.optim.Adam(free, lr=learning_rate)
    guide = _guide_of(family, free)
    zeros = torch.zeros_like(free[0][..., 0])
    total, squares, previous = zeros, zeros, None  # per window: sum of ELBOs, variances
    average = [torch.zeros_like(p) for p in free]
    improvement = torch.full_like(zeros, float("inf"))
    stderr = torch.full_like(zeros, float("nan"))
    steps, converged = max_steps, False
    for step in range(1, max_steps + 1):
        log_w = importance.log_weights(
            model, guide, args, num_particles, nesting, vectorized=vectorized, plate="data"
        )
        grads = torch.autograd.grad(-log_w.mean(0).sum(), free)
        for p, g in zip(free, grads, strict=True):
            p.grad = g
        optimizer.step()
        with torch.no_grad():
            log_w = log_w.detach()
            total = total + log_w.mean(0)
            # the Monte Carlo variance of this step's ELBO, from its draws (not the
            # spread between steps, which the optimization's progress inflates)
            squares = squares + log_w.var(0) / num_particles if num_particles > 1 else squares
            for a, p in zip(average, free, strict=True):
                a.add_(p)
            if step % check_every == 0:
                mean = total / check_every
                variance = squares / check_every**2
                if previous is not None:
                    improvement = mean - previous[0]
                    stderr = (variance + previous[1]).sqrt()
                    # one host read per window, not per step
                    if (improvement - 2 * stderr).max().item() <= tolerance:
                        steps, converged = step, True
                        break
                previous = (mean, variance)
                total, squares = zeros, zeros
                if step < max_steps:
                    for a in average:
                        a.zero_()
    with torch.no_grad():
        window = steps - (steps - 1) // check_every * check_every
        for a, p in zip(average, free, strict=True):
            p.copy_(a / window)
    return steps, converged, improvement, stderr
