r"""Choosing the objective: from a loss name, or a given ELBO, and what a pair holds.

:func:`make_elbo` and :func:`make_iwae` build the objective a loss name stands for;
:func:`objective_for` checks a loss against what :func:`~probae.objectives.inspect.inspect_pair`
found in a pair, and :func:`for_pair` does both on a pair's first batch, falling back to
one pass per particle where the pair does not broadcast over a particle dimension.
"""

from __future__ import annotations

import warnings

from pyro.infer import ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from .._common import positive_int
from ..checks import broadcast_error, check_sample_dimension
from .elbo import MeanFieldELBO, ReparamELBO
from .inspect import PairInfo, inspect_pair, prior_proposed
from .iwae import IWAE, DReGIWAE, StickingTheLandingIWAE
from .miwae import CIWAE, MIWAE, PIWAE
from .surrogate import differentiable

__all__ = [
    "GRADIENTS",
    "LOSSES",
    "check_loss",
    "for_pair",
    "make_elbo",
    "make_iwae",
    "objective_for",
]

#: the loss names fit takes
LOSSES = ("elbo", "meanfield", "iwae", "miwae", "piwae", "ciwae")
#: gradient estimators of loss="iwae"
GRADIENTS = ("standard", "stl", "dreg")
#: the objectives beside IWAE, by loss name
IWAE_OBJECTIVES = {"miwae": MIWAE, "piwae": PIWAE, "ciwae": CIWAE}
#: the IWAE bound's better gradient estimators, by name
IWAE_GRADIENTS = {"stl": StickingTheLandingIWAE, "dreg": DReGIWAE}


def make_elbo(
    loss="elbo",
    num_particles: int = 1,
    max_plate_nesting=None,
    enumerate: bool = False,
    gradient: str | None = None,
):
    """The Pyro ELBO object for a loss name (``"elbo"``, ``"meanfield"``, ``"iwae"``,
    ``"miwae"``, ``"piwae"``, ``"ciwae"``); a :class:`pyro.infer.ELBO` instance is
    returned as it is.

    :param int max_plate_nesting: how many plates deep the pair goes (guessed by Pyro
        on the first call if None).
    :param bool enumerate: the pair has sites marked for enumeration (needs
        ``max_plate_nesting``): ``"elbo"`` becomes :class:`~pyro.infer.TraceEnum_ELBO`
        and ``"iwae"`` sums the model's enumerated sites out of each weight.
    :param str gradient: the gradient estimator of ``"iwae"``: ``"standard"`` (or
        None), ``"stl"`` or ``"dreg"``.
    """
    if isinstance(loss, ELBO):
        if gradient not in (None, "standard"):
            raise ValueError(
                f"gradient={gradient!r} applies to loss='iwae', not to a "
                f"{type(loss).__name__} instance"
            )
        return loss
    if not isinstance(loss, str):
        raise TypeError(
            f"loss must be one of {list(LOSSES)} or a pyro.infer.ELBO instance, "
            f"got {type(loss).__name__}"
        )
    num_particles = positive_int("num_particles", num_particles)
    vectorize = num_particles > 1
    nesting = float("inf") if max_plate_nesting is None else max_plate_nesting
    if enumerate:
        if max_plate_nesting is None:
            raise ValueError("make_elbo(enumerate=True) needs max_plate_nesting")
    iwae_family = make_iwae(
        loss, num_particles, gradient, max_plate_nesting=nesting, enumerate=enumerate
    )
    if iwae_family is not None:
        return iwae_family
    if enumerate:
        if loss == "iwae":
            return IWAE(num_particles, max_plate_nesting=nesting, enumerate=True)
        if loss == "elbo":
            return TraceEnum_ELBO(
                num_particles=num_particles,
                vectorize_particles=vectorize,
                max_plate_nesting=nesting,
            )
        if loss == "meanfield":
            raise ValueError(
                "loss='meanfield' cannot sum out the model's enumerated discrete sites; "
                "use loss='elbo' (TraceEnum_ELBO) or loss='iwae'"
            )
    if loss == "iwae":
        return IWAE(num_particles, max_plate_nesting=nesting)
    if loss == "elbo":
        return ReparamELBO(
            num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=nesting
        )
    if loss == "meanfield":
        return MeanFieldELBO(
            num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=nesting
        )
    raise ValueError(f"unknown loss={loss!r}; expected one of {list(LOSSES)}")


def make_iwae(loss: str, num_particles: int, gradient=None, **options):
    """The IWAE-family objective for a loss name and gradient estimator, or None for
    plain ``loss="iwae"`` (:class:`IWAE`). Objectives named by string use
    ``groups=8`` (MIWAE, PIWAE) and ``beta=0.5`` (CIWAE), the settings Rainforth et
    al. (2018) recommend; build the classes directly for others."""
    if gradient not in (None, *GRADIENTS):
        raise ValueError(f"gradient must be one of {list(GRADIENTS)}, got {gradient!r}")
    if gradient not in (None, "standard") and loss != "iwae":
        raise ValueError(f"gradient={gradient!r} applies to loss='iwae', not loss={loss!r}")
    if loss in IWAE_OBJECTIVES:
        if loss in ("miwae", "piwae") and num_particles % 8:
            raise ValueError(
                f"loss={loss!r} splits num_particles into 8 groups, so num_particles must be a "
                f"multiple of 8; got {num_particles} (or build objectives.{loss.upper()} "
                "with other groups)"
            )
        return IWAE_OBJECTIVES[loss](num_particles, **options)
    if loss == "iwae" and gradient in IWAE_GRADIENTS:
        return IWAE_GRADIENTS[gradient](num_particles, **options)
    return None


def check_loss(loss) -> None:
    """Raises a ValueError (unknown name) or TypeError (neither a name nor an ELBO)."""
    if isinstance(loss, ELBO):
        return
    if not isinstance(loss, str):
        raise TypeError(
            f"loss must be one of {list(LOSSES)} or a pyro.infer.ELBO instance, "
            f"got {type(loss).__name__}"
        )
    if loss not in LOSSES:
        raise ValueError(
            f"unknown loss={loss!r}; expected one of {list(LOSSES)} or a pyro.infer.ELBO instance"
        )


def objective_for(loss, num_particles: int, info: PairInfo, gradient: str | None = None):
    """The objective :func:`probae.fit` optimizes for a pair that :func:`inspect_pair`
    described: a loss name or a :class:`pyro.infer.ELBO` instance, checked against the
    pair's enumerated and model-only sites.

    - A string loss with enumerated sites becomes :class:`~pyro.infer.TraceEnum_ELBO`
      (``"elbo"``) or an enumerating :class:`IWAE` (``"iwae"``, model-side only).
    - An ELBO instance that cannot sum out enumerated sites is used with a warning: it
      samples them and trains by score-function gradients (high variance).
    - Model-only latent sites are masked out of the model (see :func:`prior_proposed`),
      with a warning naming them; :class:`~pyro.infer.TraceMeanField_ELBO` needs every
      latent site in the guide and is refused.

    :returns: ``(elbo, model_wrapper)``; call ``model_wrapper(model)`` for the model to
        pass the ELBO.
    """
    check_loss(loss)
    given = isinstance(loss, ELBO)
    nesting = info.max_plate_nesting
    if info.guide_enumerated:
        sites = info.guide_enumerated
        if loss in ("iwae", "miwae", "piwae", "ciwae") or isinstance(loss, IWAE):
            raise ValueError(
                f"loss='iwae' cannot sum out the guide's enumerated sites {sites}; use "
                "loss='elbo' (TraceEnum_ELBO), or remove the enumeration marks to sample them"
            )
        if loss == "meanfield" or isinstance(loss, TraceMeanField_ELBO):
            raise ValueError(
                f"loss='meanfield' cannot sum out the guide's enumerated sites {sites}; use "
                "loss='elbo' (TraceEnum_ELBO)"
            )
    if (
        given
        and info.enumerated
        and not isinstance(loss, TraceEnum_ELBO)
        and not getattr(loss, "enumerate", False)
    ):
        warnings.warn(
            f"sites {info.guide_enumerated + info.model_enumerated} are marked for "
            f"enumeration, but {type(loss).__name__} does not enumerate: it samples them "
            "and trains by score-function gradients. TraceEnum_ELBO(max_plate_nesting="
            f"{nesting}) sums them out exactly",
            UserWarning,
            stacklevel=4,
        )
    if info.prior_proposed:
        if loss == "meanfield" or isinstance(loss, TraceMeanField_ELBO):
            raise ValueError(
                f"loss='meanfield' needs every latent model site in the guide; model sites "
                f"{info.prior_proposed} are not. Use loss='elbo' (their prior is then their "
                "proposal) or sample them in the guide"
            )
        warnings.warn(
            f"model sites {info.prior_proposed} are not in the guide: each is drawn from its "
            "prior, which is its proposal, so its log-density cancels from the objective "
            "(a looser bound than with a guide for it or with it integrated out)",
            UserWarning,
            stacklevel=4,
        )
    if given:
        if gradient not in (None, "standard"):
            raise ValueError(
                f"gradient={gradient!r} applies to loss='iwae', not to a "
                f"{type(loss).__name__} instance"
            )
        elbo = differentiable(loss)
    elif info.enumerated:
        elbo = make_elbo(
            loss, num_particles, max_plate_nesting=nesting, enumerate=True, gradient=gradient
        )
        if isinstance(elbo, TraceEnum_ELBO):
            # Guide-only enumeration with a model that uses the value is the M2 pattern:
            # Pyro's strict warning would flag the guide's enumerated sites as unused.
            elbo.strict_enumeration_warning = False
            elbo = differentiable(elbo)  # its differentiable_loss refuses no_grad passes
    else:
        # A known nesting: Pyro guesses none (no log line, no random draws).
        elbo = make_elbo(loss, num_particles, max_plate_nesting=nesting, gradient=gradient)
    return elbo, lambda model: prior_proposed(model, info.prior_proposed)


def for_pair(loss, num_particles: int, pair, probe, gradient: str | None = None, others=()):
    """The objective for a :class:`~probae._common.Pair` on its first batch ``probe``:
    :func:`inspect_pair`, then :func:`objective_for`, then, for vectorized particles,
    :func:`probae.checks.broadcast_error`: a pair that does not broadcast over the
    particle dimension gets its particles one pass each where the objective allows.

    :param others: first batches of other kinds (the unlabelled batches of a
        semi-supervised run, whose guide enumerates the label), inspected too.
    :returns: ``(elbo, pair)``, the pair's model wrapped as :func:`objective_for` says.
    """
    num_particles = positive_int("num_particles", num_particles)
    info = inspect_pair(pair.model, pair.guide, probe)
    for other in others:
        more = inspect_pair(pair.model, pair.guide, other)
        info = PairInfo(
            *(a + [n for n in b if n not in a] for a, b in zip(info[:3], more[:3], strict=True)),
            max(info.max_plate_nesting, more.max_plate_nesting),
        )
    elbo, wrap = objective_for(loss, num_particles, info, gradient)
    pair = pair._replace(model=wrap(pair.model))
    if getattr(elbo, "vectorize_particles", False) or isinstance(elbo, IWAE):
        what = f"loss={loss!r}" if isinstance(loss, str) else type(loss).__name__
        nesting = info.max_plate_nesting
        error = broadcast_error(pair.model, pair.guide, probe, nesting)
        if error is not None:
            # Pyro's ELBOs and the plain IWAE draw particles one pass each when told to
            if type(elbo) in (ReparamELBO, MeanFieldELBO, IWAE) and not info.enumerated:
                warnings.warn(
                    f"{what}: the pair does not broadcast over a particle dimension "
                    f"({type(error).__name__}: {error}); its {num_particles} particles are "
                    "drawn one pass each, exactly but more slowly than in one vectorized pass",
                    UserWarning,
                    stacklevel=3,
                )
                elbo.vectorize_particles = False
                pair = pair._replace(vectorized=False)
            else:
                check_sample_dimension(pair.model, pair.guide, probe, nesting, what)
    return elbo, pair
