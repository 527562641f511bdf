r"""Objectives: the Pyro ELBO objects that :func:`probae.fit` optimizes.

- ``"elbo"``: :class:`~pyro.infer.Trace_ELBO`, the reparameterized Monte Carlo ELBO
  (:class:`~pyro.infer.TraceEnum_ELBO` when the model has enumerated sites);
- ``"meanfield"``: :class:`~pyro.infer.TraceMeanField_ELBO`, with the KL term in
  closed form where one exists;
- ``"iwae"``: the importance-weighted bound of Burda et al. (2016), :class:`IWAE`,
  with the gradient estimators ``gradient="stl"`` (:class:`StickingTheLandingIWAE`)
  and ``gradient="dreg"`` (:class:`DReGIWAE`);
- ``"miwae"``, ``"piwae"``, ``"ciwae"``: the bounds of Rainforth et al. (2018),
  :class:`MIWAE`, :class:`PIWAE`, :class:`CIWAE`;
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

The package holds one concept per module: :mod:`~probae.objectives.elbo` (the ELBOs
whose loss stays on the device), :mod:`~probae.objectives.iwae` (the IWAE bound and
its gradient estimators), :mod:`~probae.objectives.miwae` (the bounds between the
ELBO and IWAE), :mod:`~probae.objectives.inspect` (pair inspection),
:mod:`~probae.objectives.surrogate` (differentiable losses for Pyro's other ELBOs)
and :mod:`~probae.objectives.dispatch` (choosing the objective).
"""

# The names marked F401 are importable from here but outside __all__: the loss-name
# tables, the trainer's check of a loss, and the surrogate wrapper for Pyro's ELBOs.
from . import dispatch
from .dispatch import (
    IWAE_GRADIENTS,  # noqa: F401
    IWAE_OBJECTIVES,  # noqa: F401
    check_loss,  # noqa: F401
    for_pair,
    make_elbo,
    make_iwae,
    objective_for,
)
from .elbo import MeanFieldELBO, ReparamELBO
from .inspect import PairInfo, inspect_pair, prior_proposed
from .iwae import IWAE, DReGIWAE, StickingTheLandingIWAE
from .miwae import CIWAE, MIWAE, PIWAE
from .surrogate import differentiable  # noqa: F401

#: the loss names :func:`probae.fit` takes
LOSSES = dispatch.LOSSES
#: gradient estimators of loss="iwae"
GRADIENTS = dispatch.GRADIENTS

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
    "GRADIENTS",
    "StickingTheLandingIWAE",
    "DReGIWAE",
    "MIWAE",
    "PIWAE",
    "CIWAE",
    "make_iwae",
]
