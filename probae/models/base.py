"""What every autoencoder in probae shares: the generative model p(z) p(x|z).

An autoencoder family differs from another only in its guide q(z|x) (a Gaussian
for the VAE, a Delta for the deterministic autoencoders) and in extra terms;
the model is the same Pyro program everywhere::

    with pyro.plate("data", N):
        with poutine.scale(scale=beta):
            z = pyro.sample("z", prior)
        pyro.sample("x", likelihood(decoder(z)), obs=x)

Sites are named ``"data"`` (the plate), ``"z"`` (the latent) and ``"x"`` (the
observation) in every family, so one training loop and one evaluator serve them
all.
"""

from __future__ import annotations

import contextlib

import pyro
import torch
from pyro import poutine
from torch import nn

from .. import _validate
from .. import likelihoods as _likelihoods
from .. import priors as _priors
from .._config import Configurable


class Autoencoder(nn.Module, Configurable):
    """Base class: holds the prior, likelihood, encoder and decoder and defines
    :meth:`model`. Subclasses define :meth:`guide` and :meth:`encode`.

    Models are plain :class:`torch.nn.Module` s whose parameters never enter Pyro's
    global parameter store: two models in one process cannot share parameters by
    accident, and ``.to(device)``, ``state_dict()`` and ``torch.save`` behave as in
    PyTorch.
    """

    #: written from the attribute when saving: a user may set beta after construction
    _live_options = ("beta",)

    def __init__(self, x_shape, z_dim: int, prior=None, likelihood=None, beta: float = 1.0):
        super().__init__()
        self.x_shape = _check_shape("x_shape", x_shape)
        z_dim = _check_z_dim(z_dim)
        self.z_dim = z_dim
        if prior is not None and not callable(prior):
            raise TypeError(
                f"prior must be a probae prior (a module returning a distribution over z), "
                f"got {type(prior).__name__}"
            )
        self.prior = _priors.StandardNormal(z_dim) if prior is None else prior
        if getattr(self.prior, "z_dim", z_dim) != z_dim:
            raise ValueError(f"prior has z_dim={self.prior.z_dim} but the model has z_dim={z_dim}")
        self.likelihood = _likelihoods.Bernoulli() if likelihood is None else likelihood
        if not isinstance(self.likelihood, _likelihoods.Likelihood):
            raise TypeError(
                f"likelihood must be a probae.likelihoods.Likelihood, got {type(likelihood).__name__}"
            )
        self.beta = beta

    # -- beta ------------------------------------------------------------------------
    @property
    def beta(self) -> float:
        """Weight of the KL term, applied with ``poutine.scale`` on the ``z`` site."""
        return self._beta

    def _beta_scale(self):
        """``poutine.scale(scale=beta)`` for the ``z`` site; nothing to enter at beta = 1."""
        return poutine.scale(scale=self.beta) if self.beta != 1 else contextlib.nullcontext()

    @beta.setter
    def beta(self, value: float) -> None:
        value = _validate.positive("beta", value)
        self._beta = value

    # -- helpers -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def to_device(self, t):
        """``t`` on the model's device (methods for using a trained model accept data
        anywhere, as :meth:`reconstruct` does); None stays None."""
        return t.to(self.device) if isinstance(t, torch.Tensor) else t

    def check_x(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Raises a clear error unless ``x`` is a float tensor of shape ``(N, *x_shape)``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not torch.is_floating_point(x):
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if tuple(x.shape[1:]) != self.x_shape or x.dim() != len(self.x_shape) + 1:
            raise ValueError(
                f"{name} must have shape (N, {', '.join(map(str, self.x_shape))}) for this "
                f"model (x_shape={self.x_shape}), got {tuple(x.shape)}"
            )
        return x

    def _batch_size(self, x, c) -> int:
        if x is not None:
            return self.check_x(x).shape[0]
        if c is not None:
            return c.shape[0]
        return 1

    def _no_condition(self, c) -> None:
        """Refuses a condition: for the families that take none."""
        if c is not None:
            raise ValueError(f"{type(self).__name__} is not a conditional model; it was given c=")

    # -- the Pyro program --------------------------------------------------------------
    def model(self, x=None, c=None):
        r"""The generative model :math:`p(z)\,p(x|z)`; with ``x=None`` it generates."""
        n = self._batch_size(x, c)
        with pyro.plate("data", n):
            with self._beta_scale():
                z = pyro.sample("z", self._prior_of_z(n, c))
            out = self.decoder(z) if c is None else self.decoder(z, c)
            return pyro.sample("x", self.likelihood(out, len(self.x_shape)), obs=x)

    def _prior_of_z(self, n, c):
        # A probae prior may sample sites of its own first (an enumerated mixture
        # component) and return p(z | them); a user's module returns p(z) directly.
        prior = self.prior.model if isinstance(self.prior, _priors.Prior) else self.prior
        return prior((n,), c) if c is not None else prior((n,))

    def guide(self, x, c=None):
        """q(z|x); every family defines its own."""
        raise NotImplementedError(f"{type(self).__name__} must define guide(x, c=None)")

    # -- using a trained model ---------------------------------------------------------
    def encode(self, x, c=None) -> torch.Tensor:
        """The code of x: the posterior mean for a VAE, f(x) for a deterministic
        autoencoder."""
        raise NotImplementedError(f"{type(self).__name__} must define encode(x, c=None)")

    def decode(self, z, c=None) -> torch.Tensor:
        """E[x|z], the mean of the likelihood (pixel probabilities for Bernoulli)."""
        z, c = self.to_device(z), self.to_device(c)
        out = self.decoder(z) if c is None else self.decoder(z, c)
        return self.likelihood.mean(out)

    @torch.no_grad()
    def reconstruct(self, x, c=None) -> torch.Tensor:
        """E[x|z] at the code of ``x``."""
        x = self.check_x(x.to(self.device))
        return self.decode(self.encode(x, c), c)

    @torch.no_grad()
    def sample(self, n: int, c=None, sampler=None) -> torch.Tensor:
        """``n`` draws z ~ p(z), decoded to E[x|z]; a tensor of shape ``(n, *x_shape)``.

        :param sampler: a density fitted to the codes after training
            (:mod:`probae.samplers`) to draw z from instead of the prior.
        """
        try:
            n = _validate.integer("n", n, minimum=1)
        except TypeError:
            raise ValueError(f"n must be a positive integer, got {n!r}") from None
        if sampler is not None:
            if c is not None:
                raise ValueError("sampler= draws codes without a condition; it was given c=")
            return self.decode(self.sampler_codes(sampler, n))
        if getattr(self.prior, "improper", False):
            raise RuntimeError(
                f"{type(self).__name__} has a flat (improper) prior, which cannot be sampled: "
                "fit a density to its codes first (probae.fit_latent_density(model, data))"
            )
        z = self.prior((n,)).sample()
        return self.decode(z)

    def sampler_codes(self, sampler, n: int) -> torch.Tensor:
        """``n`` codes from ``sampler.sample(n)``, checked and on the model's device."""
        if not callable(getattr(sampler, "sample", None)):
            raise TypeError(
                "sampler must have a sample(n) method returning codes (probae.samplers), "
                f"got {type(sampler).__name__}"
            )
        z = sampler.sample(n)
        if not isinstance(z, torch.Tensor) or tuple(z.shape) != (n, self.z_dim):
            raise ValueError(
                f"sampler must return codes of shape (n, z_dim) = ({n}, {self.z_dim}), got "
                f"{tuple(getattr(z, 'shape', ()))}"
            )
        return z.to(self.device)


def _check_z_dim(z_dim) -> int:
    try:
        return _validate.integer("z_dim", z_dim, minimum=1)
    except TypeError:
        raise ValueError(f"z_dim must be a positive integer, got {z_dim!r}") from None


def _check_shape(name, shape) -> tuple:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{name} must be a tuple of positive integers, got {shape!r}")
    try:
        shape = tuple(_validate.integer(name, s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of positive integers, got {shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"{name} must be a non-empty tuple of positive integers, got {shape!r}")
    return shape
