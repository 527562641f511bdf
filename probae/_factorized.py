r"""Factorized distributions coordinate by coordinate.

A latent site of a mean-field guide or prior is usually a distribution over scalars
wrapped by Pyro and torch: ``Normal(loc, scale).to_event(1)``, perhaps masked or
expanded. What reads such a site one coordinate at a time (the loss terms per latent
dimension, the active-units diagnostic, the KL decomposition) finds the scalar
distribution underneath here, and the closed-form
:math:`\mathrm{KL}(q(z_j)\,\|\,p(z_j))` of each coordinate from it, so every one of
them unwraps and scores the same way.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

__all__ = ["closed_form_kl", "coordinates", "innermost", "unmasked"]


def innermost(fn):
    """The distribution under the wrappers that leave each coordinate's law as it is
    (Independent, masking, expansion). A transformed distribution is a law of its own
    (a LogNormal is not its base Normal) and is not unwrapped."""
    while not isinstance(fn, torch.distributions.TransformedDistribution):
        inner = getattr(fn, "base_dist", None)
        if inner is None:
            return fn
        fn = inner
    return fn


def unmasked(fn):
    """``fn`` without the masks Pyro puts around it (:class:`~pyro.distributions.MaskedDistribution`)."""
    while isinstance(fn, dist.MaskedDistribution):
        fn = fn.base_dist
    return fn


def coordinates(fn):
    """The per-coordinate distribution of a factorized distribution over vectors
    (an unmasked ``Independent`` over one dimension of a distribution over scalars),
    or None when ``fn`` is not one."""
    fn = unmasked(fn)
    if isinstance(fn, torch.distributions.Independent) and fn.reinterpreted_batch_ndims == 1:
        if fn.base_dist.event_shape == ():
            return fn.base_dist
    return None


def closed_form_kl(q, p):
    r""":math:`\mathrm{KL}(q\,\|\,p)` in closed form, elementwise over the batch of
    ``q`` and ``p`` (per coordinate for two distributions over scalars), or None
    where torch and Pyro know no closed form for the pair."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None
