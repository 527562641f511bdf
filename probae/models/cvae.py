r"""The conditional VAE, and a deterministic baseline for structured output prediction.

A conditional VAE is three networks in one model/guide pair: the recognition
network :math:`q_\phi(z|x, c)` in the guide, and in the model the **learned**
prior network :math:`p_\theta(z|c)` and the generation network
:math:`p_\theta(x|z, c)`. It is trained on the conditional ELBO

.. math::

    \log p_\theta(x|c) \;\ge\; \mathcal L(x, c) =
    \mathbb E_{q_\phi(z|x, c)}[\log p_\theta(x|z, c)]
    - \beta\,\mathrm{KL}\big(q_\phi(z|x, c)\,\|\,p_\theta(z|c)\big),

with :math:`\beta = 1` for the bound itself. Because the prior is learned, the KL
term pulls the prior towards the posterior as much as the posterior towards the
prior; at test time, when only c is known, completions come from the prior:
:math:`z \sim p_\theta(z|c)`, :math:`x \sim p_\theta(x|z, c)`.

The sites are those of every probae model: plate ``"data"``, latent ``"z"``
(inside ``poutine.scale(scale=beta)`` in both model and guide) and observation
``"x"``.

**References**

[1] `Learning Structured Output Representation using Deep Conditional Generative
Models`, Kihyuk Sohn, Honglak Lee, Xinchen Yan (NeurIPS 2015)
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .. import _validate, nets
from .. import likelihoods as _likelihoods
from .. import posteriors as _posteriors
from .. import priors as _priors
from .._config import Configurable
from .base import Autoencoder, _check_shape


class _Conditioned:
    """Condition checks shared by the conditional models."""

    c_shape: tuple

    @property
    def c_dim(self) -> int:
        return int(math.prod(self.c_shape))

    @property
    def num_classes(self) -> int | None:
        """K for a class-conditional model (``c_shape == (K,)``), else None."""
        return self.c_shape[0] if len(self.c_shape) == 1 else None

    def check_c(self, c, n: int | None = None, name: str = "c") -> torch.Tensor:
        """The condition as a float tensor of shape ``(N, c_dim)``.

        Accepts ``(N, *c_shape)``, ``(N, c_dim)``, one condition ``c_shape`` shared
        by ``n`` points, or (for a class-conditional model) integer labels of shape
        ``(N,)``, turned into one-hot rows.
        """
        if c is None:
            raise ValueError(
                f"{type(self).__name__} needs a condition {name}= of shape (N, "
                f"{', '.join(map(str, self.c_shape))})"
            )
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(c).__name__}")
        if not torch.is_floating_point(c):
            if c.dtype == torch.bool or c.is_complex():
                raise TypeError(f"{name} must hold real numbers or integer labels, got {c.dtype}")
            if self.num_classes is None or c.dim() > 1:
                raise TypeError(
                    f"integer {name} is read as class labels, which needs a model built with "
                    f"c_shape=(number of classes,) and labels of shape (N,); this model has "
                    f"c_shape={self.c_shape} and {name} has shape {tuple(c.shape)}"
                )
            c = _one_hot(c.reshape(-1), self.num_classes, name)
        c_shape = self.c_shape
        if tuple(c.shape) in (c_shape, (self.c_dim,)):
            c = c.reshape(1, -1).expand(1 if n is None else n, -1)
        elif c.dim() >= 2 and tuple(c.shape[1:]) in (c_shape, (self.c_dim,)):
            c = c.reshape(c.shape[0], -1)
        else:
            raise ValueError(
                f"{name} must have shape (N, {', '.join(map(str, c_shape))}) for this model "
                f"(c_shape={c_shape}), got {tuple(c.shape)}"
            )
        if n is not None and c.shape[0] != n:
            raise ValueError(
                f"{name} must have one row per data point: got {c.shape[0]} rows for {n}"
            )
        return c.to(self.device)


def _one_hot(labels: torch.Tensor, num_classes: int, name: str) -> torch.Tensor:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"label out of range: {name} as class labels must lie in [0, {num_classes}), "
            f"got values in [{labels.min().item()}, {labels.max().item()}]"
        )
    return nn.functional.one_hot(labels.long(), num_classes).float()


class CVAE(_Conditioned, Autoencoder):
    r"""A conditional VAE with a learned conditional prior.

    - recognition network
      :math:`q(z|x, c) = \mathcal N(\mu_\phi(x, c), \mathrm{diag}\,\sigma^2_\phi(x, c))`;
    - prior network :math:`p(z|c)`, by default :class:`probae.priors.ConditionalNormal`,
      trained with the rest;
    - generation network :math:`p(x|z, c)`: the likelihood of ``decoder(z, c)``.

    ``model(x, c)`` scores x; ``model(None, c)`` generates from
    :math:`p(z|c)\,p(x|z, c)` and needs no guide.

    :param tuple x_shape: shape of one output x, e.g. ``(64,)``.
    :param tuple c_shape: shape of one condition c, e.g. ``(10,)`` for one-hot labels.
    :param int z_dim: latent dimension.
    :param prior: a conditional prior ``prior(batch_shape, c)`` (c flattened to
        ``(N, c_dim)``); a :class:`~probae.priors.ConditionalNormal` if None.
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param float beta: weight of the KL term (1 for the conditional ELBO).
    :param tuple hidden: hidden widths of the recognition and generation MLPs.
    :param tuple prior_hidden: hidden widths of the default prior network.
    :param encoder: a network ``(x, c) -> (loc, scale)``; built if None.
    :param decoder: a network ``(z, c) -> likelihood input``; built if None.
    :param posterior: a family from :mod:`probae.posteriors` (default
        :class:`~probae.posteriors.DiagonalNormal`) or its name (``"iaf:4"``).
    """

    def __init__(
        self,
        x_shape,
        c_shape,
        z_dim: int,
        prior=None,
        likelihood=None,
        beta: float = 1.0,
        hidden=(256, 256),
        prior_hidden=(256,),
        encoder=None,
        decoder=None,
        posterior=None,
    ):
        if c_shape is None:
            raise ValueError("c_shape is required: a CVAE is conditioned on c (use VAE otherwise)")
        c_shape = _check_shape("c_shape", c_shape)
        c_dim = int(math.prod(c_shape))
        if prior is None:
            prior_hidden = _validate.widths("prior_hidden", prior_hidden)
            z_dim = _validate.integer("z_dim", z_dim, minimum=1)
            prior = _priors.ConditionalNormal(c_dim, z_dim, hidden=prior_hidden)
        super().__init__(x_shape, z_dim, prior, likelihood, beta)
        self.c_shape = c_shape
        if len(self.x_shape) != 1:
            raise ValueError(
                f"CVAE networks are MLPs on flat vectors: x_shape must have one dimension, "
                f"got {self.x_shape} (flatten the data)"
            )
        family = _posteriors.DiagonalNormal() if posterior is None else _posteriors.get(posterior)
        if encoder is None:
            context_dim = family.context_dim(self.z_dim)
            extra = {"context_dim": context_dim} if context_dim else {}
            encoder = nets.MLPEncoder(self.x_shape, z_dim, hidden, c_dim=c_dim, **extra)
        self.encoder = encoder
        self.decoder = (
            nets.MLPDecoder(z_dim, self.x_shape, tuple(reversed(tuple(hidden))), c_dim=c_dim)
            if decoder is None
            else decoder
        )
        self.posterior_family = family.setup(self.z_dim)

    @classmethod
    def for_task(cls, task, z_dim: int = 32, **kwargs) -> CVAE:
        """A CVAE sized for a :class:`probae.data.QuadrantTask` (or anything with
        ``x_shape`` and ``c_shape``)."""
        return cls(task.x_shape, task.c_shape, z_dim, **kwargs)

    # -- the Pyro program --------------------------------------------------------------
    def model(self, x=None, c=None):
        r"""The generative model :math:`p(z|c)\,p(x|z, c)`; with ``x=None`` it generates."""
        n = None if x is None else self.check_x(x).shape[0]
        c = self.check_c(c, n)
        return super().model(x, c)

    def posterior(self, x, c) -> dist.TorchDistribution:
        """q(z|x, c) as a distribution with ``event_dim=1``."""
        return self.posterior_family(self.encoder(x, c))

    def guide(self, x, c=None):
        """The recognition model q(z|x, c)."""
        x = self.check_x(x)
        c = self.check_c(c, x.shape[0])
        with pyro.plate("data", x.shape[0]):
            with self._beta_scale():
                return pyro.sample("z", self.posterior(x, c))

    # -- using a trained model ---------------------------------------------------------
    def encode(self, x, c=None) -> torch.Tensor:
        """The posterior mean of z given x and c."""
        x = self.check_x(self.to_device(x))
        return self.posterior_family.code(self.encoder(x, self.check_c(c, x.shape[0])))

    def decode(self, z, c=None) -> torch.Tensor:
        """E[x|z, c]; ``z`` may carry extra leading dimensions (samples)."""
        z = self.to_device(z)
        c = self.check_c(c, z.shape[-2] if z.dim() > 1 else None)
        return self.likelihood.mean(self.decoder(z, c if z.dim() > 1 else c[0]))

    @torch.no_grad()
    def sample(self, n: int, c=None) -> torch.Tensor:
        """``n`` draws :math:`z \\sim p(z|c)` decoded to E[x|z, c], shape ``(n, *x_shape)``.

        :param int n: number of samples.
        :param c: one condition (``c_shape``, or an int label for a class-conditional
            model) shared by all, or ``n`` of them.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if isinstance(c, int) and not isinstance(c, bool):
            c = torch.full((n,), c, dtype=torch.long)
        c = self.check_c(c, n)
        z = self.prior((n,), c).sample()
        return self.decode(z, c)

    @torch.no_grad()
    def predict(self, c, num_samples: int = 10) -> torch.Tensor:
        """Completions of each condition: ``num_samples`` draws :math:`z \\sim p(z|c)`,
        decoded to E[x|z, c]. Returns shape ``(num_samples, N, *x_shape)``."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        c = self.check_c(c)
        z = self.prior((c.shape[0],), c).sample((num_samples,))
        return self.decode(z, c)


class ConditionalBaseline(_Conditioned, nn.Module, Configurable):
    r"""A deterministic network that predicts x from c directly,
    :math:`p(x|c) = \text{likelihood}(f(c))`: the baseline of Sohn, Lee & Yan (2015)
    and of Pyro's CVAE tutorial.

    It is a Pyro pair with an empty guide (nothing latent), so :func:`probae.fit`
    trains it on :math:`-\log p(x|c)` (the cross-entropy for Bernoulli pixels) and
    :mod:`probae.evaluate` scores it with the same code as a CVAE: its
    conditional ELBO and conditional log-likelihood are both exactly
    :math:`\log p(x|c)`.

    :param tuple x_shape: shape of one output x (flat).
    :param tuple c_shape: shape of one condition c.
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param tuple hidden: hidden widths of the MLP.
    """

    def __init__(self, x_shape, c_shape, likelihood=None, hidden=(256, 256)):
        super().__init__()
        self.x_shape = _check_shape("x_shape", x_shape)
        self.c_shape = _check_shape("c_shape", c_shape)
        if len(self.x_shape) != 1:
            raise ValueError(f"x_shape must have one dimension, got {self.x_shape}")
        self.likelihood = _likelihoods.Bernoulli() if likelihood is None else likelihood
        if not isinstance(self.likelihood, _likelihoods.Likelihood):
            raise TypeError(
                "likelihood must be a probae.likelihoods.Likelihood, got "
                f"{type(likelihood).__name__}"
            )
        self.net = nets.MLP(self.c_dim, tuple(hidden), self.x_shape[0])

    @classmethod
    def for_task(cls, task, **kwargs) -> ConditionalBaseline:
        """A baseline sized for a :class:`probae.data.QuadrantTask`."""
        return cls(task.x_shape, task.c_shape, **kwargs)

    device = Autoencoder.device
    check_x = Autoencoder.check_x

    def model(self, x=None, c=None):
        """:math:`p(x|c)`; with ``x=None`` it samples x."""
        n = None if x is None else self.check_x(x).shape[0]
        c = self.check_c(c, n)
        with pyro.plate("data", c.shape[0]):
            return pyro.sample("x", self.likelihood(self.net(c), 1), obs=x)

    def guide(self, x=None, c=None):
        """Nothing is latent: the guide is empty."""

    @torch.no_grad()
    def predict(self, c) -> torch.Tensor:
        """E[x|c], shape ``(N, *x_shape)``."""
        return self.likelihood.mean(self.net(self.check_c(c)))
