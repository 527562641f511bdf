"""probae: probabilistic-programming autoencoders.

Every autoencoder here is a Pyro model/guide pair; one training loop
(:func:`fit`) and one evaluation module (:mod:`probae.evaluate`) serve them all,
and a user's own pair too.
"""

from . import (
    callbacks,
    corruption,
    data,
    dsprites,
    evaluate,
    likelihoods,
    nets,
    posteriors,
    priors,
    samplers,
    schedules,
    stacking,
    viz,
)
from ._config import register
from .models import (
    AE,
    CVAE,
    DIPVAE,
    DRAW,
    RAE,
    VAE,
    VQVAE,
    WAE,
    BetaTCVAE,
    ConditionalBaseline,
    ContractiveAE,
    DenoisingAE,
    FactorVAE,
    HierarchicalVAE,
    InfoVAE,
    KSparseAE,
    SparseAE,
    StackedDenoisingAE,
    fit_code_prior,
    fit_latent_density,
)
from .models import families as _families
from .models import stacked as _stacked
from .saving import RUN_BUILDERS as _RUN_BUILDERS
from .saving import load, save
from .train import History, fit

_RUN_BUILDERS[:] = [_families.build]  # probae.load rebuilds command-line runs with it
_stacked.GREEDY_TRAINING[:] = [stacking.pretrain]  # StackedDenoisingAE.pretrain trains with it

__version__ = "0.1.0"

__all__ = [
    "AE",
    "BetaTCVAE",
    "CVAE",
    "DIPVAE",
    "DRAW",
    "FactorVAE",
    "HierarchicalVAE",
    "VAE",
    "VQVAE",
    "ConditionalBaseline",
    "ContractiveAE",
    "DenoisingAE",
    "History",
    "KSparseAE",
    "SparseAE",
    "StackedDenoisingAE",
    "callbacks",
    "corruption",
    "data",
    "dsprites",
    "evaluate",
    "fit",
    "fit_code_prior",
    "fit_latent_density",
    "likelihoods",
    "load",
    "nets",
    "posteriors",
    "priors",
    "register",
    "save",
    "schedules",
    "viz",
    "samplers",
    "RAE",
    "WAE",
    "InfoVAE",
]
