"""Autoencoder families, one file each; every one is a Pyro model/guide pair."""

from . import families
from .autoencoders import (
    AE,
    ContractiveAE,
    DenoisingAE,
    DeterministicAutoencoder,
    KSparseAE,
    SparseAE,
    fit_latent_density,
)
from .base import Autoencoder
from .cvae import CVAE, ConditionalBaseline
from .dipvae import DIPVAE
from .factorvae import FactorVAE
from .tcvae import BetaTCVAE
from .vae import VAE

__all__ = [
    "AE",
    "Autoencoder",
    "BetaTCVAE",
    "DIPVAE",
    "FactorVAE",
    "CVAE",
    "ConditionalBaseline",
    "ContractiveAE",
    "DenoisingAE",
    "DeterministicAutoencoder",
    "KSparseAE",
    "SparseAE",
    "VAE",
    "families",
    "fit_latent_density",
]
