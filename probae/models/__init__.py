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
from .code_prior import GatedPixelCNN
from .cvae import CVAE, ConditionalBaseline
from .dipvae import DIPVAE
from .draw import DRAW
from .factorvae import FactorVAE
from .hierarchical import HierarchicalVAE
from .rae import RAE
from .stacked import StackedDenoisingAE
from .tcvae import BetaTCVAE
from .vae import VAE
from .vqvae import VQVAE, CodebookUsage, fit_code_prior
from .wae import WAE, InfoVAE

__all__ = [
    "AE",
    "Autoencoder",
    "BetaTCVAE",
    "DIPVAE",
    "FactorVAE",
    "CVAE",
    "ConditionalBaseline",
    "CodebookUsage",
    "ContractiveAE",
    "DRAW",
    "DenoisingAE",
    "DeterministicAutoencoder",
    "GatedPixelCNN",
    "HierarchicalVAE",
    "KSparseAE",
    "SparseAE",
    "StackedDenoisingAE",
    "VAE",
    "VQVAE",
    "families",
    "fit_code_prior",
    "fit_latent_density",
    "RAE",
    "WAE",
    "InfoVAE",
]
