r"""The base of the autoencoders whose guide is a point mass,
:math:`q(z|x) = \delta(z - f(x))` (:class:`DeterministicAutoencoder`), the code encoder
:math:`f` they share (:class:`CodeEncoder`), and the density fitted to their codes after
training, which they sample from (:func:`fit_latent_density`, :class:`CodeDensity`).

A deterministic autoencoder has no generative prior to sample from.
:func:`fit_latent_density` fits a Gaussian mixture to the codes of the training
data (ex-post density estimation, Ghosh et al. 2020), after which
:meth:`DeterministicAutoencoder.sample` decodes draws from that mixture. The
mixture is fitted after training: it is not the model's own prior. The families
themselves are in :mod:`probae.models.autoencoders`.

**References**

[1] `From Variational to Deterministic Autoencoders`, Partha Ghosh, Mehdi S. M.
Sajjadi, Antonio Vergari, Michael Black, Bernhard Schölkopf (ICLR 2020)
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .. import _validate, nets
from .. import likelihoods as _likelihoods
from .. import priors as _priors
from .._common import prepare
from .._config import Configurable
from .base import Autoencoder

__all__ = ["CodeDensity", "CodeEncoder", "DeterministicAutoencoder", "fit_latent_density"]


_ACTIVATIONS = {
    None: None,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
}


def _check_activation(activation):
    if activation not in _ACTIVATIONS:
        names = [a for a in _ACTIVATIONS if a is not None]
        raise ValueError(f"activation must be None or one of {names}, got {activation!r}")
    return activation


class CodeEncoder(nn.Module, Configurable):
    r"""A deterministic encoder :math:`f(x) = a(\mathrm{MLP}(x))`: an MLP (ReLU between
    hidden layers) from the flattened input to ``z_dim`` units, then the code
    activation :math:`a` (identity, sigmoid, ReLU or tanh).

    With ``hidden=()`` it is one layer, :math:`f(x) = a(Wx + b)`, the encoder of the
    classic single-layer autoencoders. Any number of leading batch dimensions pass
    through.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param tuple hidden: hidden widths.
    :param str activation: ``None``, ``"sigmoid"``, ``"relu"`` or ``"tanh"``.
    """

    def __init__(self, x_shape, z_dim: int, hidden=(), activation=None):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.z_dim = z_dim
        self.hidden = _validate.widths("hidden", hidden)
        self.activation = _check_activation(activation)
        self.net = nets.MLP(math.prod(self.x_shape), self.hidden, z_dim)

    @property
    def first_layer(self) -> nn.Linear:
        """The linear layer applied to the input (its rows are the filters)."""
        return self.net[0]

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The code before the final activation."""
        return self.net(x.reshape(*x.shape[: x.dim() - len(self.x_shape)], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre_activation(x)
        act = _ACTIVATIONS[self.activation]
        return h if act is None else act(h)

    def extra_repr(self):
        return f"activation={self.activation}"


class CodeDensity(nn.Module):
    r"""A Gaussian mixture over codes,
    :math:`\hat p(z) = \sum_k \pi_k \mathcal N(z; \mu_k, \Sigma_k)`, with full
    covariances, held as buffers so it moves with its model and is saved in its
    ``state_dict``. Built by :func:`fit_latent_density`.

    :param torch.Tensor logits: log mixture weights, shape ``(K,)``.
    :param torch.Tensor locs: means, shape ``(K, D)``.
    :param torch.Tensor scale_tril: Cholesky factors of the covariances, ``(K, D, D)``.
    """

    def __init__(self, logits, locs, scale_tril):
        super().__init__()
        self.register_buffer("logits", torch.as_tensor(logits))
        self.register_buffer("locs", torch.as_tensor(locs))
        self.register_buffer("scale_tril", torch.as_tensor(scale_tril))

    @property
    def components(self) -> int:
        return self.logits.shape[0]

    def forward(self) -> dist.TorchDistribution:
        """The mixture as a distribution with ``event_shape == (D,)``."""
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits),
            dist.MultivariateNormal(self.locs, scale_tril=self.scale_tril),
        )

    def extra_repr(self):
        return f"components={self.components}, z_dim={self.locs.shape[-1]}"


class DeterministicAutoencoder(Autoencoder):
    r"""Base class of the autoencoders whose guide is a point mass
    :math:`q(z|x) = \delta(z - f(x))`.

    The default likelihood is :class:`~probae.likelihoods.Gaussian` with scale 1, so
    the loss is half the squared reconstruction error plus a constant; the default
    prior is :class:`~probae.priors.Flat`. Subclasses change the code
    (:meth:`guide_code`) and the prior.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param prior: a module from :mod:`probae.priors` (default flat).
    :param likelihood: a module from :mod:`probae.likelihoods` (default Gaussian, s = 1).
    :param tuple hidden: hidden widths of the encoder; the decoder mirrors them.
    :param str activation: the code activation of the default encoder.
    :param encoder: a module mapping x to its code; built from ``x_shape`` if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        prior=None,
        likelihood=None,
        hidden=(128,),
        activation=None,
        encoder=None,
        decoder=None,
    ):
        likelihood = _likelihoods.Gaussian() if likelihood is None else likelihood
        prior = _priors.Flat(z_dim) if prior is None else prior
        super().__init__(x_shape, z_dim, prior, likelihood, beta=1.0)
        hidden = _validate.widths("hidden", hidden)
        if encoder is None:
            encoder = CodeEncoder(self.x_shape, z_dim, hidden, activation)
        elif not callable(encoder):
            raise TypeError(f"encoder must be a module mapping x to codes, got {encoder!r}")
        if decoder is None:
            decoder = nets.make_decoder(z_dim, self.x_shape, hidden)
        elif not callable(decoder):
            raise TypeError(f"decoder must be a module mapping codes to x, got {decoder!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.register_module("latent_density", None)

    # -- the Pyro program --------------------------------------------------------------
    def guide_code(self, x: torch.Tensor) -> torch.Tensor:
        """The code the guide puts its point mass on. Runs inside the ``"data"``
        plate, so subclasses may add per-point ``pyro.factor`` sites here."""
        return self.encoder(x)

    def guide(self, x, c=None):
        r"""The point-mass guide :math:`q(z|x) = \delta(z - f(x))`."""
        x = self.check_x(x)
        self._no_condition(c)
        with pyro.plate("data", x.shape[0]):
            code = self.guide_code(x)
            # The same scale as the model's z site: TraceMeanField_ELBO reads the guide's.
            with self._beta_scale():
                return pyro.sample("z", dist.Delta(code, event_dim=1))

    def model(self, x=None, c=None):
        self._no_condition(c)
        return super().model(x)

    # -- using a trained model ---------------------------------------------------------
    def encode(self, x, c=None) -> torch.Tensor:
        """The code f(x) of clean ``x``."""
        self._no_condition(c)
        return self.encoder(self.check_x(self.to_device(x)))

    def decode(self, z, c=None) -> torch.Tensor:
        self._no_condition(c)
        return super().decode(z)

    @torch.no_grad()
    def sample(self, n: int, c=None, sampler=None) -> torch.Tensor:
        """``n`` codes drawn from the density fitted by :func:`fit_latent_density` (or
        from ``sampler``, :mod:`probae.samplers`), decoded to E[x|z]. That density is
        fitted to the training codes after training; it is not the model's own prior."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self._no_condition(c)
        if sampler is not None:
            return self.decode(self.sampler_codes(sampler, n))
        if self.latent_density is None:
            raise RuntimeError(
                f"{type(self).__name__} is a deterministic autoencoder: its guide is a point "
                "mass and its prior a penalty, not a generative density, so it has nothing to "
                "sample from. Fit a density to the codes of the training data first, "
                "probae.fit_latent_density(model, train_data, components=10); then "
                "model.sample(n) decodes draws from that mixture"
            )
        return self.decode(self.latent_density().sample((n,)))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # A fitted code density is part of the state: rebuild its slot so a fresh model
        # can load the state of one that had fit_latent_density run on it.
        prefix = "latent_density."
        if self.latent_density is None and any(k.startswith(prefix) for k in state_dict):
            self.latent_density = CodeDensity(
                *(state_dict[prefix + name] for name in ("logits", "locs", "scale_tril"))
            ).to(self.device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


@torch.no_grad()
def fit_latent_density(
    model,
    data,
    components: int = 10,
    covariance: str = "full",
    seed: int = 0,
    batch_size: int = 1000,
) -> CodeDensity:
    r"""Fits a Gaussian mixture to the codes of ``data`` (ex-post density estimation,
    Ghosh et al. 2020) and attaches it to ``model``, after which ``model.sample(n)``
    decodes draws from it.

    The mixture :math:`\hat p(z) = \sum_k \pi_k \mathcal N(z; \mu_k, \Sigma_k)` is the
    maximum-likelihood fit (EM, scikit-learn) to :math:`\{f(x_n)\}`. It is fitted after
    training and plays no part in the loss: it is not the model's own prior.

    :param model: a trained deterministic autoencoder.
    :param data: a :class:`~probae.data.Dataset` or a tensor, usually the training data.
    :param int components: mixture components K (at most the number of points).
    :param str covariance: ``"full"`` or ``"diag"`` covariances.
    :param int seed: seeds the EM initialization.
    :param int batch_size: points encoded at once.
    :returns: the fitted :class:`CodeDensity` (also ``model.latent_density``).
    """
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    if not isinstance(model, DeterministicAutoencoder):
        raise TypeError(
            "model must be a probae deterministic autoencoder (AE, DenoisingAE, SparseAE, "
            f"KSparseAE, ContractiveAE), got {type(model).__name__}"
        )
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ValueError(f"components must be a positive integer, got {components!r}")
    if covariance not in ("full", "diag"):
        raise ValueError(f"covariance must be 'full' or 'diag', got {covariance!r}")
    x = prepare(data, model, check_support=False)[0]
    if components > x.shape[0]:
        raise ValueError(
            f"components={components} exceeds the number of data points ({x.shape[0]})"
        )
    was_training = model.training
    model.eval()
    try:
        codes = torch.cat([model.encode(xb) for xb in x.split(batch_size)])
    finally:
        model.train(was_training)
    mixture = GaussianMixture(components, covariance_type=covariance, random_state=seed)
    # EM on codes is small linear algebra: threaded BLAS spends more time synchronizing
    # than computing (tens of times slower on a busy machine), so it runs on one thread.
    with threadpool_limits(limits=1):
        mixture.fit(codes.double().cpu().numpy())
    covariances = torch.as_tensor(mixture.covariances_, dtype=torch.float64)
    if covariance == "diag":
        covariances = torch.diag_embed(covariances)
    density = CodeDensity(
        torch.as_tensor(mixture.weights_, dtype=torch.float64).log(),
        torch.as_tensor(mixture.means_, dtype=torch.float64),
        torch.linalg.cholesky(covariances),
    ).to(device=x.device, dtype=codes.dtype)
    model.latent_density = density
    return density
