r"""Deterministic autoencoders as Pyro model/guide pairs whose guide is a Delta.

A classic autoencoder is the same kind of object as a VAE. Its model is the shared
:math:`p(z)\,p(x|z)` of :class:`~probae.models.base.Autoencoder`; its guide is a point
mass at the code, :math:`q(z|x) = \delta(z - f(x))`. A Delta has
:math:`\log q(z|x) = 0` at its own value, so the single-sample ELBO is exact and the
training loss is

.. math::

    -\mathcal L(x) = -\log p(x\,|\,z{=}f(x)) - \log p(f(x)) + \Omega(x),

a reconstruction error, a prior term and an extra guide term :math:`\Omega`:

- :class:`AE`: :math:`\delta(f(x))`, flat prior; the loss is :math:`-\log p(x|z)`.
- :class:`DenoisingAE`: :math:`\delta(f(\tilde x))` with :math:`\tilde x \sim C(\cdot|x)`
  drawn in the guide, flat prior; the model scores the clean :math:`x`.
- :class:`SparseAE`: :math:`\delta(f(x))`; ``"l1"``: a Laplace prior,
  :math:`-\log p(z) = \lambda\|z\|_1 + D\log(2/\lambda)`; ``"kl"``: flat prior and
  :math:`\Omega = \beta\sum_j \mathrm{KL}(\rho\,\|\,\hat\rho_j)`.
- :class:`KSparseAE`: :math:`\delta(\mathrm{top}_k(Wx + b))`, flat prior.
- :class:`ContractiveAE`: :math:`\delta(f(x))`, flat prior,
  :math:`\Omega = \lambda\|\partial f(x)/\partial x\|_F^2`.

With a Gaussian likelihood of fixed scale :math:`s` the reconstruction term is
:math:`\|x - g(f(x))\|^2 / 2s^2 + \tfrac D2 \log 2\pi s^2`: the mean-squared-error
autoencoder. The flat prior (:class:`~probae.priors.Flat`) has
:math:`\log p(z) = 0`.

Extra terms :math:`\Omega` live in the guide as ``pyro.factor`` sites inside the
``"data"`` plate. The guide's log-density enters the ELBO with a minus sign, so a
guide factor of value :math:`+\Omega` adds :math:`\Omega` to the loss; since every
site is inside the plate, per-point estimators (:func:`probae.evaluate.elbo`) see
it point by point. The same pair is trained by :func:`probae.fit` and measured by
:mod:`probae.evaluate`; :func:`probae.evaluate.log_likelihood` refuses these models,
because a point mass has no density to importance-weight by.

A deterministic autoencoder has no generative prior to sample from.
:func:`fit_latent_density` fits a Gaussian mixture to the codes of the training
data (ex-post density estimation, Ghosh et al. 2020), after which
:meth:`DeterministicAutoencoder.sample` decodes draws from that mixture. The
mixture is fitted after training: it is not the model's own prior.

**References**

[1] `Reducing the Dimensionality of Data with Neural Networks`, Geoffrey E. Hinton,
Ruslan R. Salakhutdinov (Science 2006)

[2] `Extracting and Composing Robust Features with Denoising Autoencoders`, Pascal
Vincent, Hugo Larochelle, Yoshua Bengio, Pierre-Antoine Manzagol (ICML 2008)

[3] `Sparse autoencoder`, Andrew Ng, CS294A lecture notes (Stanford 2011);
`Deep Learning`, Ian Goodfellow, Yoshua Bengio, Aaron Courville, ch. 14 (MIT Press 2016)

[4] `k-Sparse Autoencoders`, Alireza Makhzani, Brendan Frey (ICLR 2014, arXiv 2013)

[5] `Contractive Auto-Encoders: Explicit Invariance During Feature Extraction`,
Salah Rifai, Pascal Vincent, Xavier Muller, Xavier Glorot, Yoshua Bengio (ICML 2011)

[6] `From Variational to Deterministic Autoencoders`, Partha Ghosh, Mehdi S. M.
Sajjadi, Antonio Vergari, Michael Black, Bernhard Schölkopf (ICLR 2020)
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .. import _validate, nets
from .. import corruption as _corruption
from .. import likelihoods as _likelihoods
from .. import priors as _priors
from .._common import prepare
from .._config import Configurable
from .base import Autoencoder

__all__ = [
    "CodeEncoder",
    "CodeDensity",
    "TiedDecoder",
    "DeterministicAutoencoder",
    "AE",
    "DenoisingAE",
    "SparseAE",
    "KSparseAE",
    "ContractiveAE",
    "fit_latent_density",
    "top_k",
]

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


def _check_weight(name: str, value) -> float:
    return _validate.positive(name, value)


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


class TiedDecoder(nn.Module):
    r"""A linear decoder whose weights are the transpose of a linear encoder layer's,
    :math:`g(z) = W^\top z + c` for an encoder :math:`f(x) = Wx + b` (tied weights, as in
    Makhzani & Frey's k-sparse autoencoder). Only the bias :math:`c` is its own
    parameter; :math:`W` stays the encoder's, so the pair is trained as one matrix.

    :param torch.nn.Linear layer: the encoder's linear layer (z_dim x D).
    :param tuple x_shape: shape of one data point.
    """

    def __init__(self, layer: nn.Linear, x_shape):
        super().__init__()
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"layer must be a torch.nn.Linear, got {type(layer).__name__}")
        self.x_shape = tuple(x_shape)
        if math.prod(self.x_shape) != layer.in_features:
            raise ValueError(
                f"x_shape={self.x_shape} does not match the layer's {layer.in_features} inputs"
            )
        # A tuple keeps the shared layer out of this module's state_dict (it is saved
        # once, under the encoder).
        self._layer = (layer,)
        self.bias = nn.Parameter(torch.zeros(layer.in_features))

    @property
    def weight(self) -> torch.Tensor:
        return self._layer[0].weight

    def forward(self, z):
        out = torch.nn.functional.linear(z, self.weight.t(), self.bias)
        return out.reshape(*out.shape[:-1], *self.x_shape)


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

    def _no_condition(self, c) -> None:
        if c is not None:
            raise ValueError(f"{type(self).__name__} is not a conditional model; it was given c=")


class AE(DeterministicAutoencoder):
    r"""The plain autoencoder: :math:`q(z|x) = \delta(z - f(x))`, a flat prior, and the
    loss :math:`-\log p(x|g(f(x)))`; with a Gaussian likelihood of scale :math:`s`,

    .. math:: \frac{\|x - g(f(x))\|^2}{2s^2} + \frac D2 \log(2\pi s^2)

    per point (Hinton & Salakhutdinov 2006).

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths of the encoder; the decoder mirrors them.
    :param str activation: code activation (None for a linear code).
    :param encoder: a module mapping x to its code; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        likelihood=None,
        hidden=(128,),
        activation=None,
        encoder=None,
        decoder=None,
    ):
        super().__init__(x_shape, z_dim, None, likelihood, hidden, activation, encoder, decoder)


class DenoisingAE(DeterministicAutoencoder):
    r"""The denoising autoencoder (Vincent et al. 2008): the guide draws a corrupted
    copy :math:`\tilde x \sim C(\tilde x|x)` and puts its point mass at
    :math:`f(\tilde x)`, while the model scores the clean :math:`x`:

    .. math:: -\mathcal L(x) = -\log p(x\,|\,z{=}f(\tilde x)), \qquad \tilde x \sim C(\cdot|x).

    Its expectation over the corruption is the denoising criterion. The corrupted
    input is recorded in the guide's trace as the site ``"x_tilde"`` (a masked
    auxiliary Delta: it carries no density). The guide corrupts in every mode, so
    :func:`probae.evaluate.elbo` is a one-draw estimate of the denoising objective;
    :meth:`encode` and :meth:`reconstruct` use the clean input.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param corruption: a :class:`probae.corruption.Corruption` (default
        ``MaskingNoise(0.25)``).
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths of the encoder; the decoder mirrors them.
    :param str activation: code activation.
    :param encoder: a module mapping x to its code; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        corruption=None,
        likelihood=None,
        hidden=(128,),
        activation=None,
        encoder=None,
        decoder=None,
    ):
        super().__init__(x_shape, z_dim, None, likelihood, hidden, activation, encoder, decoder)
        if corruption is None:
            corruption = _corruption.MaskingNoise(0.25)
        if not callable(corruption):
            raise TypeError(
                f"corruption must be a probae.corruption.Corruption (or a callable x -> x~), "
                f"got {type(corruption).__name__}"
            )
        self.corruption = corruption

    def guide_code(self, x):
        x_tilde = self.corruption(x)
        # Recorded for inspection only: an auxiliary, masked Delta carries no density, so
        # every ELBO (mean-field included) and the per-point estimators ignore it.
        pyro.sample(
            "x_tilde",
            dist.Delta(x_tilde, event_dim=len(self.x_shape)).mask(False),
            obs=x_tilde,
            infer={"is_auxiliary": True},
        )
        return self.encoder(x_tilde)


class SparseAE(DeterministicAutoencoder):
    r"""The sparse autoencoder, with one of two penalties on the code :math:`z = f(x)`.

    ``penalty="l1"``: a factorized Laplace prior of scale :math:`1/\lambda`, whose
    negative log-density is the L1 penalty of sparse coding (Goodfellow et al. ch. 14),

    .. math:: -\log p(z) = \lambda\|z\|_1 + D\log(2/\lambda).

    The code activation defaults to ReLU, so inactive units are exactly zero.

    ``penalty="kl"``: sigmoid codes whose average activation over the batch,
    :math:`\hat\rho_j = \frac1N\sum_n z_{nj}`, is pulled towards a small target
    :math:`\rho` (Ng's CS294A notes), with the flat prior and the extra term

    .. math:: \beta \sum_j \mathrm{KL}(\rho\,\|\,\hat\rho_j), \quad
              \mathrm{KL}(\rho\|\hat\rho) = \rho\log\frac{\rho}{\hat\rho}
              + (1-\rho)\log\frac{1-\rho}{1-\hat\rho}.

    This is a property of the batch, not of a point. It enters the guide as a
    ``pyro.factor`` named ``"sparsity"`` inside the ``"data"`` plate, spread evenly
    over the batch's points (each carries :math:`1/N` of it), so that the plate's
    sum is the batch penalty and per-point estimators still apply; the value a point
    gets depends on the batch it is evaluated with.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param str penalty: ``"l1"`` or ``"kl"``.
    :param float weight: :math:`\lambda` for ``"l1"`` (default 0.1), :math:`\beta`
        for ``"kl"`` (default 3).
    :param float rho: the target mean activation of ``"kl"``.
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths of the encoder; the decoder mirrors them.
    :param str activation: code activation (``"l1"``: default ReLU; ``"kl"``: sigmoid,
        the only one allowed).
    :param encoder: a module mapping x to its code; built if None (with ``"kl"`` its
        output must lie in (0, 1)).
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    PENALTIES = ("l1", "kl")

    def __init__(
        self,
        x_shape,
        z_dim: int,
        penalty: str = "l1",
        weight: float | None = None,
        rho: float = 0.05,
        likelihood=None,
        hidden=(128,),
        activation="default",
        encoder=None,
        decoder=None,
    ):
        if penalty not in self.PENALTIES:
            raise ValueError(f"penalty must be one of {list(self.PENALTIES)}, got {penalty!r}")
        weight = (0.1 if penalty == "l1" else 3.0) if weight is None else weight
        weight = _check_weight("weight", weight)
        if penalty == "l1":
            activation = "relu" if activation == "default" else activation
            prior = _priors.Laplace(z_dim, scale=1.0 / weight)
        else:
            if activation not in ("default", "sigmoid"):
                raise ValueError(
                    f"penalty='kl' needs sigmoid codes (mean activations in (0, 1)); "
                    f"got activation={activation!r}"
                )
            activation = "sigmoid"
            if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho < 1:
                raise ValueError(f"rho must be a number in (0, 1), got {rho!r}")
            prior = None
        super().__init__(x_shape, z_dim, prior, likelihood, hidden, activation, encoder, decoder)
        self.penalty = penalty
        self.weight = weight
        self.rho = float(rho)

    def sparsity_penalty(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\beta\sum_j \mathrm{KL}(\rho\|\hat\rho_j)` for a batch of sigmoid codes
        ``z`` of shape ``(N, z_dim)`` (``penalty="kl"``), :math:`\hat\rho` their mean."""
        rho_hat = z.mean(0)
        # A saturated sigmoid can round to exactly 0 or 1; keep the logarithms finite.
        eps = torch.finfo(z.dtype).eps
        rho_hat = rho_hat.clamp(eps, 1 - eps)
        rho = self.rho
        kl = rho * (math.log(rho) - rho_hat.log()) + (1 - rho) * (
            math.log(1 - rho) - (1 - rho_hat).log()
        )
        return self.weight * kl.sum(-1)

    def guide_code(self, x):
        z = self.encoder(x)
        if self.penalty == "kl":
            n = z.shape[0]
            share = (self.sparsity_penalty(z) / n).expand(n)
            # A guide factor enters the ELBO as -log q: a factor of +share adds it to the loss.
            pyro.factor("sparsity", share, has_rsample=True)
        return z

    def extra_repr(self):
        rho = f", rho={self.rho}" if self.penalty == "kl" else ""
        return f"penalty={self.penalty!r}, weight={self.weight}{rho}"


def top_k(h: torch.Tensor, k: int) -> torch.Tensor:
    """Keeps the ``k`` largest entries of the last dimension of ``h`` and zeroes the
    rest. The result is ``h`` times a 0/1 mask, so gradients reach the kept entries
    only."""
    index = h.topk(k, dim=-1).indices
    mask = torch.zeros_like(h).scatter_(-1, index, 1.0)
    return h * mask


class KSparseAE(DeterministicAutoencoder):
    r"""The k-sparse autoencoder (Makhzani & Frey 2013): a linear code
    :math:`h = Wx + b` of which only the :math:`k` largest units are kept,

    .. math:: q(z|x) = \delta\big(z - \mathrm{top}_k(Wx + b)\big),

    with a flat prior and, by default, the tied linear decoder :math:`g(z) = W^\top z + c`
    (:class:`TiedDecoder`). Gradients flow through the kept units only. For features
    (:meth:`encode`) the paper keeps the :math:`\alpha k` largest units
    (:math:`\alpha \ge 1`); :meth:`reconstruct` uses the same :meth:`encode`.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size (number of hidden units).
    :param int k: units kept in training.
    :param float alpha: :meth:`encode` keeps ``min(z_dim, round(alpha * k))`` units.
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths before the linear code (default none).
    :param bool tied: decode with the transpose of the encoder's weights (needs the
        built-in one-layer encoder, ``hidden=()``); False for a decoder of its own
        mirroring ``hidden``. Default: tied wherever it applies.
    :param encoder: a module mapping x to the code before selection; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    """

    def __init__(
        self,
        x_shape,
        z_dim: int,
        k: int = 10,
        alpha: float = 1.0,
        likelihood=None,
        hidden=(),
        tied: bool | None = None,
        encoder=None,
        decoder=None,
    ):
        z_dim = _validate.integer("z_dim", z_dim, minimum=1)
        hidden = _validate.widths("hidden", hidden)
        can_tie = not tuple(hidden) and encoder is None and decoder is None
        tied = can_tie if tied is None else _validate.boolean("tied", tied)
        k = _validate.integer("k", k) if not isinstance(k, bool) else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= z_dim:
            raise ValueError(f"k must be an integer in [1, z_dim={z_dim}], got {k!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 1:
            raise ValueError(f"alpha must be a number >= 1, got {alpha!r}")
        if tied and not can_tie:
            raise ValueError(
                "tied=True needs the built-in one-layer encoder and decoder (hidden=(), "
                "encoder=None, decoder=None); pass tied=False otherwise"
            )
        super().__init__(x_shape, z_dim, None, likelihood, hidden, None, encoder, decoder)
        if tied:
            self.decoder = TiedDecoder(self.encoder.first_layer, self.x_shape)
        self.k = k
        self.alpha = float(alpha)
        self.tied = bool(tied)

    @property
    def encode_k(self) -> int:
        return min(self.z_dim, round(self.alpha * self.k))

    def guide_code(self, x):
        return top_k(self.encoder(x), self.k)

    def encode(self, x, c=None):
        self._no_condition(c)
        return top_k(self.encoder(self.check_x(self.to_device(x))), self.encode_k)

    def extra_repr(self):
        return f"k={self.k}, alpha={self.alpha}, tied={self.tied}"


class ContractiveAE(DeterministicAutoencoder):
    r"""The contractive autoencoder (Rifai et al. 2011): a flat prior and the penalty

    .. math:: \lambda\,\Big\|\frac{\partial f(x)}{\partial x}\Big\|_F^2

    on the encoder's Jacobian, added in the guide as a ``pyro.factor`` named
    ``"contraction"`` inside the ``"data"`` plate.

    The Frobenius norm is exact for any encoder: computed with ``torch.func``
    (a reverse-mode Jacobian per point, vectorized over the batch). For the
    one-layer sigmoid encoder :math:`f(x) = \sigma(Wx + b)` (the default,
    ``hidden=()``), it has the closed form

    .. math:: \|J_f(x)\|_F^2 = \sum_j \big(h_j(1 - h_j)\big)^2 \sum_i W_{ji}^2,
              \quad h = f(x),

    which costs one forward pass and is used whenever it applies.

    :param tuple x_shape: shape of one data point.
    :param int z_dim: code size.
    :param float weight: :math:`\lambda`.
    :param likelihood: default :class:`~probae.likelihoods.Gaussian` with s = 1.
    :param tuple hidden: hidden widths of the encoder (default none: one layer).
    :param str activation: code activation (default sigmoid).
    :param encoder: a module mapping x to its code; built if None.
    :param decoder: a module mapping codes to the likelihood's input; built if None.
    :param str method: ``"auto"`` (closed form where it applies), ``"closed-form"``
        or ``"autograd"``.
    """

    METHODS = ("auto", "closed-form", "autograd")

    def __init__(
        self,
        x_shape,
        z_dim: int,
        weight: float = 0.1,
        likelihood=None,
        hidden=(),
        activation="sigmoid",
        encoder=None,
        decoder=None,
        method: str = "auto",
    ):
        super().__init__(x_shape, z_dim, None, likelihood, hidden, activation, encoder, decoder)
        self.weight = _check_weight("weight", weight)
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {list(self.METHODS)}, got {method!r}")
        if method == "closed-form" and not self.has_closed_form:
            raise ValueError(
                "method='closed-form' needs the built-in one-layer sigmoid encoder "
                "(hidden=(), activation='sigmoid', encoder=None)"
            )
        self.method = method

    @property
    def has_closed_form(self) -> bool:
        """Whether the encoder is the one-layer sigmoid :math:`\\sigma(Wx + b)`."""
        enc = self.encoder
        return isinstance(enc, CodeEncoder) and not enc.hidden and enc.activation == "sigmoid"

    def _use_closed_form(self, method) -> bool:
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {list(self.METHODS)}, got {method!r}")
        if method == "closed-form" and not self.has_closed_form:
            raise ValueError("method='closed-form' needs the one-layer sigmoid encoder")
        return method == "closed-form" or (method == "auto" and self.has_closed_form)

    def code_and_contraction(self, x: torch.Tensor, method: str | None = None):
        r"""The code :math:`f(x)` and :math:`\|\partial f(x)/\partial x\|_F^2` of each point.

        :param torch.Tensor x: inputs of shape ``(N, *x_shape)``.
        :param str method: overrides the model's ``method`` for this call.
        :returns: ``(z, squared_norm)`` of shapes ``(N, z_dim)`` and ``(N,)``.
        """
        method = self.method if method is None else method
        if self._use_closed_form(method):
            h = self.encoder(x)
            weight = self.encoder.first_layer.weight
            slope = (h * (1 - h)).pow(2)
            return h, slope @ weight.pow(2).sum(-1)
        return self.encoder(x), jacobian_squared_norm(self.encoder, x, len(self.x_shape))

    def contraction(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        r""":math:`\|\partial f(x)/\partial x\|_F^2` for each point, shape ``(N,)``."""
        return self.code_and_contraction(self.check_x(self.to_device(x)), method)[1]

    def guide_code(self, x):
        z, squared_norm = self.code_and_contraction(x)
        # A guide factor enters the ELBO as -log q: a factor of +penalty adds it to the loss.
        pyro.factor("contraction", self.weight * squared_norm, has_rsample=True)
        return z

    def extra_repr(self):
        return f"weight={self.weight}, method={self.method!r}"


def jacobian_squared_norm(encoder, x: torch.Tensor, event_dim: int) -> torch.Tensor:
    r""":math:`\|\partial f(x_n)/\partial x_n\|_F^2` for every point of a batch, exactly,
    by a reverse-mode Jacobian per point vectorized with ``torch.func.vmap``. Gradients
    flow to the encoder's parameters (for training the penalty).

    :param encoder: a module mapping ``(N, *x_shape)`` to ``(N, z_dim)``, each point
        independently of the others.
    :param torch.Tensor x: inputs of shape ``(N, *x_shape)``.
    :param int event_dim: ``len(x_shape)``.
    """

    def one_point(v):
        return encoder(v.unsqueeze(0)).squeeze(0)

    jacobian = torch.func.vmap(torch.func.jacrev(one_point), randomness="different")(x)
    return jacobian.pow(2).reshape(x.shape[0], -1).sum(-1)


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
