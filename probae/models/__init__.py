"""Autoencoder families, one file each; every one is a Pyro model/guide pair."""

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
from .vae import VAE

__all__ = [
    "AE",
    "Autoencoder",
    "ContractiveAE",
    "DenoisingAE",
    "DeterministicAutoencoder",
    "KSparseAE",
    "SparseAE",
    "VAE",
    "fit_latent_density",
]
