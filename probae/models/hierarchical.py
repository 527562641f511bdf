r"""A VAE with L stochastic layers (Burda et al. 2016, section 5).

.. math::

    p(x, z_1, \dots, z_L) = p(z_L) \prod_{l=1}^{L-1} p(z_l \mid z_{l+1})\; p(x \mid z_1),
    \qquad
    q(z_1, \dots, z_L \mid x) = q(z_1 \mid x) \prod_{l=2}^{L} q(z_l \mid z_{l-1}),

with :math:`p(z_L) = \mathcal N(0, I)` and every other factor a diagonal Gaussian whose
mean and scale are a network of the layer it conditions on. The sites are ``"z1"``
(next to x) to ``"zL"`` (the top), all in the ``"data"`` plate; every estimator of
:mod:`probae.evaluate` sums their log-densities per point.

Two inference networks are built in. ``inference="bottom-up"`` (Burda et al.): each
layer's posterior reads the draw of the layer below, as written above.
``inference="ladder"`` (Sønderby et al. 2016) runs top down, in the model's order,
:math:`q(z_L|x) \prod_{l<L} q(z_l | z_{l+1}, x)`: a deterministic bottom-up pass
(the same networks, on the means) gives each layer a Gaussian message
:math:`\mathcal N(\hat\mu_l(x), \hat\sigma_l^2(x))`, and each layer below the top
merges it with the model's own :math:`p(z_l|z_{l+1}) = \mathcal N(\mu_p, \sigma_p^2)`
by precision weighting,

.. math:: \sigma_q^{-2} = \hat\sigma_l^{-2} + \sigma_p^{-2}, \qquad
          \mu_q = \sigma_q^2 (\hat\mu_l \hat\sigma_l^{-2} + \mu_p \sigma_p^{-2}),

the exact posterior of :math:`z_l` when the message is a Gaussian likelihood of it.

**References**

[1] `Importance Weighted Autoencoders`, Yuri Burda, Roger Grosse, Ruslan
Salakhutdinov (ICLR 2016)

[2] `Ladder Variational Autoencoders`, Casper Kaae Sønderby, Tapani Raiko, Lars
Maaløe, Søren Kaae Sønderby, Ole Winther (NeurIPS 2016)
"""

from __future__ import annotations

import pyro
import torch
from torch import nn

from .. import _densities, _validate, nets
from .. import priors as _priors
from .base import Autoencoder

INFERENCES = ("bottom-up", "ladder")


class HierarchicalVAE(Autoencoder):
    r"""A VAE with stochastic layers of sizes ``z_dims`` (bottom first), with
    bottom-up or ladder inference (see the module).

    :param tuple x_shape: shape of one data point (flattened by the networks).
    :param tuple z_dims: sizes of the latent layers :math:`z_1, \dots, z_L`, from the
        one next to x to the top, e.g. ``(100, 50)`` (Burda et al.'s two layers).
    :param likelihood: a module from :mod:`probae.likelihoods` (default Bernoulli).
    :param float beta: weight of the KL terms (every latent site is scaled).
    :param tuple hidden: hidden widths of the networks between x and :math:`z_1`.
    :param tuple hidden_between: hidden widths of the networks between two latent
        layers (Burda et al.: ``(100, 100)`` for 200-unit ``hidden``).
    :param str inference: ``"bottom-up"`` or ``"ladder"``.
    """

    def __init__(
        self,
        x_shape,
        z_dims=(100, 50),
        likelihood=None,
        beta: float = 1.0,
        hidden=(200, 200),
        hidden_between=(100, 100),
        inference: str = "bottom-up",
    ):
        if inference not in INFERENCES:
            raise ValueError(f"inference must be one of {INFERENCES}, got {inference!r}")
        z_dims = _validate.widths("z_dims", z_dims)
        if not z_dims:
            raise ValueError("z_dims must name at least one latent layer, got ()")
        # z_dim is the size of the code that encode returns and decode reads (z1);
        # the prior is over the top layer
        super().__init__(x_shape, z_dims[0], None, likelihood, beta)
        self.prior = _priors.StandardNormal(z_dims[-1])
        self.z_dims = z_dims
        self.inference = inference
        hidden = _validate.widths("hidden", hidden)
        hidden_between = _validate.widths("hidden_between", hidden_between)
        self.encoder = nets.make_encoder(self.x_shape, z_dims[0], hidden)
        self.decoder = nets.make_decoder(z_dims[0], self.x_shape, tuple(reversed(hidden)))
        # q(z_{l+1} | z_l) and p(z_l | z_{l+1}), l = 1 .. L-1
        self.up = nn.ModuleList(
            nets.MLPEncoder((below,), above, hidden_between)
            for below, above in zip(z_dims[:-1], z_dims[1:], strict=True)
        )
        self.down = nn.ModuleList(
            nets.MLPEncoder((above,), below, tuple(reversed(hidden_between)))
            for below, above in zip(z_dims[:-1], z_dims[1:], strict=True)
        )

    @property
    def sites(self) -> list:
        """The latent sites, bottom first: ``["z1", ..., "zL"]``."""
        return [f"z{l + 1}" for l in range(len(self.z_dims))]

    def model(self, x=None, c=None):
        r""":math:`p(z_L) \prod_l p(z_l|z_{l+1})\, p(x|z_1)`; with ``x=None`` it generates."""
        if c is not None:
            raise ValueError("HierarchicalVAE is not conditional; it was given c=")
        n = self._batch_size(x, None)
        names = self.sites
        with pyro.plate("data", n):
            with self._beta_scale():
                z = pyro.sample(names[-1], self.prior((n,)))
                for l in reversed(range(len(self.z_dims) - 1)):
                    loc, scale = self.down[l](z)
                    z = pyro.sample(names[l], _densities.Normal(loc, scale).to_event(1))
            return pyro.sample("x", self.likelihood(self.decoder(z), len(self.x_shape)), obs=x)

    def guide(self, x, c=None):
        r""":math:`q(z_1|x) \prod_l q(z_{l+1}|z_l)` (bottom up), or the ladder's top-down
        :math:`q(z_L|x) \prod_l q(z_l|z_{l+1}, x)`."""
        if c is not None:
            raise ValueError("HierarchicalVAE is not conditional; it was given c=")
        x = self.check_x(x)
        if self.inference == "ladder":
            return self._ladder_guide(x)
        names = self.sites
        with pyro.plate("data", x.shape[0]):
            with self._beta_scale():
                loc, scale = self.encoder(x)
                z = pyro.sample(names[0], _densities.Normal(loc, scale).to_event(1))
                for l, up in enumerate(self.up):
                    loc, scale = up(z)
                    z = pyro.sample(names[l + 1], _densities.Normal(loc, scale).to_event(1))

    def _ladder_guide(self, x):
        messages = [self.encoder(x)]
        for up in self.up:
            messages.append(up(messages[-1][0]))
        names = self.sites
        with pyro.plate("data", x.shape[0]):
            with self._beta_scale():
                loc, scale = messages[-1]
                z = pyro.sample(names[-1], _densities.Normal(loc, scale).to_event(1))
                for l in reversed(range(len(self.z_dims) - 1)):
                    loc, scale = merge(*messages[l], *self.down[l](z))
                    z = pyro.sample(names[l], _densities.Normal(loc, scale).to_event(1))

    def encode(self, x, c=None) -> torch.Tensor:
        """The mean of the bottom-up message for :math:`z_1`, the code next to x (its
        posterior mean under bottom-up inference)."""
        return self.encoder(self.to_device(x))[0]

    def decode(self, z, c=None) -> torch.Tensor:
        """E[x | z_1] for a code :math:`z_1` of the bottom layer."""
        return self.likelihood.mean(self.decoder(self.to_device(z)))

    @torch.no_grad()
    def sample(self, n: int, c=None) -> torch.Tensor:
        """``n`` ancestral draws :math:`z_L \\to \\dots \\to z_1`, decoded to E[x|z_1]."""
        try:
            n = _validate.integer("n", n, minimum=1)
        except TypeError:
            raise ValueError(f"n must be a positive integer, got {n!r}") from None
        z = self.prior((n,)).sample()
        for down in reversed(self.down):
            loc, scale = down(z)
            z = loc + scale * torch.randn_like(loc)
        return self.decode(z)


def merge(loc_a, scale_a, loc_b, scale_b):
    """The normalized product of two diagonal Gaussians: ``(loc, scale)`` with precision
    the sum of the precisions and the precision-weighted mean."""
    precision_a, precision_b = scale_a.pow(-2), scale_b.pow(-2)
    variance = 1 / (precision_a + precision_b)
    return variance * (loc_a * precision_a + loc_b * precision_b), variance.sqrt()
