"""probae: probabilistic-programming autoencoders.

Every autoencoder here is a Pyro model/guide pair; one training loop
(:func:`fit`) and one evaluation module (:mod:`probae.evaluate`) serve them all,
and a user's own pair too.
"""

from . import corruption, data, evaluate, likelihoods, nets, priors, viz
from ._config import register
from .models import (
    AE,
    CVAE,
    DRAW,
    VAE,
    VQVAE,
    ConditionalBaseline,
    ContractiveAE,
    DenoisingAE,
    KSparseAE,
    SparseAE,
    fit_code_prior,
    fit_latent_density,
)
from .saving import load, save
from .train import History, fit

__version__ = "0.1.0"

__all__ = [
    "AE",
    "CVAE",
    "DRAW",
    "VAE",
    "VQVAE",
    "ConditionalBaseline",
    "ContractiveAE",
    "DenoisingAE",
    "History",
    "KSparseAE",
    "SparseAE",
    "corruption",
    "data",
    "evaluate",
    "fit",
    "fit_code_prior",
    "fit_latent_density",
    "likelihoods",
    "load",
    "nets",
    "priors",
    "register",
    "save",
    "viz",
]
