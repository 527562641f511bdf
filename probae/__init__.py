"""probae: probabilistic-programming autoencoders.

Every autoencoder here is a Pyro model/guide pair; one training loop
(:func:`fit`) and one evaluation module (:mod:`probae.evaluate`) serve them all,
and a user's own pair too.
"""

from . import data, evaluate, likelihoods, nets, priors
from .models import CVAE, VAE, ConditionalBaseline
from .train import History, fit

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "History",
    "data",
    "evaluate",
    "fit",
    "likelihoods",
    "nets",
    "priors",
]
__all__ += ["CVAE", "ConditionalBaseline"]
