"""Autoencoder families, one file each; every one is a Pyro model/guide pair."""

from .base import Autoencoder
from .cvae import CVAE, ConditionalBaseline
from .vae import VAE

__all__ = ["Autoencoder", "VAE"]
__all__ += ["CVAE", "ConditionalBaseline"]
