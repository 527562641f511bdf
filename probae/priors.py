"""Priors p(z) and conditional priors p(z|c).

Every prior is a :class:`torch.nn.Module` with one contract::

    prior(batch_shape, c=None) -> pyro distribution with event_dim == 1

The distribution's event is the latent vector z (``event_shape == (z_dim,)``);
its batch shape is ``batch_shape`` (for conditional priors, the batch shape
of ``c``). Constants are registered buffers and learned quantities are
parameters, so ``.to(device)`` moves a prior with its model and nothing inside
a model or guide is created on a fixed device.

A user's own prior is any module honouring the same contract. A prior with
random variables of its own (the component of a mixture, summed out by
enumeration) also defines :meth:`Prior.model`, the prior's part of the Pyro
model: it samples those sites and returns the distribution of z given them.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import AffineAutoregressive
from pyro.nn import AutoRegressiveNN
from torch import nn
from torch.distributions.transforms import Transform
from torch.nn.functional import softplus

from . import _densities, _validate
from ._config import Configurable

__all__ = [
    "Prior",
    "StandardNormal",
    "Normal",
    "GaussianMixture",
    "Laplace",
    "Flat",
    "VampPrior",
    "Flow",
    "get",
]


def _check_dim(name: str, value) -> int:
    try:
        return _validate.integer(name, value, minimum=1)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class Prior(nn.Module, Configurable):
    """Base class of priors over a ``z_dim``-dimensional latent vector."""

    #: True for priors whose samples are meaningless (improper densities)
    improper = False

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = _check_dim("z_dim", z_dim)
        # A zero-size buffer that tells the prior's device and dtype.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _zeros(self) -> torch.Tensor:
        return self._anchor.new_zeros(self.z_dim)

    def forward(self, batch_shape=(), c=None) -> dist.TorchDistribution:
        if c is not None:
            raise ValueError(
                f"{type(self).__name__} is not a conditional prior; it was given c= "
                "(use priors.ConditionalNormal for p(z|c))"
            )
        return self.distribution().expand(torch.Size(batch_shape))

    def model(self, batch_shape=(), c=None) -> dist.TorchDistribution:
        """The prior's part of the Pyro model, called inside the ``"data"`` plate just
        before the ``"z"`` site: it samples the prior's own sites, if any, and returns
        the distribution of z given them. A prior without sites of its own returns
        ``self(batch_shape, c)``."""
        return self(batch_shape, c)

    def distribution(self) -> dist.TorchDistribution:
        """p(z) for one point (event shape ``(z_dim,)``); every unconditional prior defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define distribution()")

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}"


class StandardNormal(Prior):
    r""":math:`p(z) = \mathcal N(0, I)`, the prior of Kingma & Welling (2014)."""

    def distribution(self):
        zeros = self._zeros()
        return _densities.StandardNormal(zeros, zeros + 1.0).to_event(1)


class Normal(Prior):
    r"""A diagonal Gaussian :math:`\mathcal N(\mu, \mathrm{diag}(\sigma^2))` with learned
    :math:`\mu` and :math:`\sigma` (initialized at the standard normal)."""

    def __init__(self, z_dim: int):
        super().__init__(z_dim)
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.raw_scale = nn.Parameter(torch.full((z_dim,), _inverse_softplus(1.0)))

    @property
    def scale(self) -> torch.Tensor:
        return softplus(self.raw_scale)

    def distribution(self):
        return _densities.Normal(self.loc, self.scale).to_event(1)


class GaussianMixture(Prior):
    r"""A learned mixture of ``components`` diagonal Gaussians,

    .. math:: p(z) = \sum_{k=1}^K \pi_k\, \mathcal N(z; \mu_k, \mathrm{diag}(\sigma_k^2)),

    with learned weights :math:`\pi = \mathrm{softmax}(w)`, means and scales.

    With ``enumerate=False`` the prior is the marginal mixture, a
    :class:`~pyro.distributions.MixtureSameFamily` over z. With ``enumerate=True``
    the component is an explicit discrete latent of the model,

    .. math:: k \sim \mathrm{Categorical}(\pi), \qquad
              z \mid k \sim \mathcal N(\mu_k, \mathrm{diag}(\sigma_k^2)),

    a site ``"component"`` inside the ``"data"`` plate marked
    ``infer={"enumerate": "parallel"}``: :func:`probae.fit` then trains with
    :class:`~pyro.infer.TraceEnum_ELBO`, which sums k out exactly, so both forms
    have the same ELBO for the same parameters. The enumerated form is the Pyro
    way to give a VAE a discrete latent (Kingma et al. 2014, M2; Dilokthanakul et
    al. 2016); :func:`probae.evaluate.cluster` reads off each point's most
    probable component in either form.

    The means start spread out (a standard normal draw, fixed by ``seed``) so
    components do not collapse onto one another at the first step.

    :param int z_dim: latent dimension.
    :param int components: number of mixture components K.
    :param bool enumerate: make the component an enumerated discrete site of the
        model (True) or sum it out inside the density of z (False).
    :param float init_scale: initial standard deviation of each component.
    :param int seed: seed of the initial means (independent of the global RNG).
    """

    def __init__(
        self,
        z_dim: int,
        components: int = 10,
        enumerate: bool = False,
        init_scale: float = 0.5,
        seed: int = 0,
    ):
        super().__init__(z_dim)
        self.components = _check_dim("components", components)
        enumerate = _validate.boolean("enumerate", enumerate)
        init_scale = _validate.positive("init_scale", init_scale)
        seed = _validate.integer("seed", seed, minimum=0, maximum=_validate.MAX_SEED)
        self.enumerate = enumerate
        generator = torch.Generator().manual_seed(seed)
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(torch.randn(components, z_dim, generator=generator))
        self.raw_scales = nn.Parameter(
            torch.full((components, z_dim), _inverse_softplus(init_scale))
        )

    @property
    def scales(self) -> torch.Tensor:
        return softplus(self.raw_scales)

    @property
    def weights(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    def component_distribution(self) -> dist.TorchDistribution:
        """The K Gaussians as one distribution of batch shape ``(K,)``."""
        return dist.Normal(self.locs, self.scales).to_event(1)

    def distribution(self):
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits), self.component_distribution()
        )

    def model(self, batch_shape=(), c=None):
        """The marginal mixture; or, with ``enumerate=True``, samples the site
        ``"component"`` (enumerated in parallel by :class:`~pyro.infer.TraceEnum_ELBO`)
        and returns p(z | component)."""
        if not self.enumerate:
            return self(batch_shape, c)
        if c is not None:
            self(batch_shape, c)  # raises the not-conditional error
        k = pyro.sample(
            "component",
            dist.Categorical(logits=self.logits).expand(torch.Size(batch_shape)),
            infer={"enumerate": "parallel"},
        )
        return dist.Normal(self.locs[k], self.scales[k]).to_event(1)

    def extra_repr(self):
        return f"z_dim={self.z_dim}, components={self.components}, enumerate={self.enumerate}"


class Laplace(Prior):
    r"""A factorized Laplace prior :math:`p(z) = \prod_j \tfrac{1}{2b} e^{-|z_j|/b}`.

    Its negative log-density is :math:`\|z\|_1 / b + D \log 2b`: an L1 penalty of
    weight :math:`\lambda = 1/b` (the sparse-coding reading of sparsity).

    :param float scale: the scale b.
    """

    def __init__(self, z_dim: int, scale: float = 1.0):
        super().__init__(z_dim)
        scale = _validate.positive("scale", scale)
        self.register_buffer("scale", torch.tensor(scale))

    def distribution(self):
        zeros = self._zeros()
        return dist.Laplace(zeros, zeros + self.scale).to_event(1)


class _FlatDensity(dist.ImproperUniform):
    """Pyro's ImproperUniform with a log-density on its argument's device and dtype
    (Pyro's is a CPU zero, which a CUDA computation cannot add)."""

    def log_prob(self, value):
        batch_shape = value.shape[: value.dim() - self.event_dim]
        batch_shape = torch.broadcast_shapes(batch_shape, self.batch_shape)
        return value.new_zeros(()).expand(batch_shape)


class Flat(Prior):
    r"""The improper flat prior, :math:`\log p(z) = 0`.

    It contributes nothing to the loss: with a Delta guide the ELBO reduces to
    the reconstruction term, which is the deterministic autoencoder's loss.
    It cannot be sampled.
    """

    improper = True

    def distribution(self):
        return _FlatDensity(constraints.real, torch.Size(), torch.Size([self.z_dim]))


class VampPrior(Prior):
    r"""The variational mixture of posteriors prior (Tomczak & Welling, 2018),

    .. math:: p_\lambda(z) = \frac1K \sum_{k=1}^K q(z \mid u_k),

    the model's own recognition network evaluated at K learned pseudo-inputs
    :math:`u_k`. It approximates the aggregate posterior
    :math:`\frac1N \sum_n q(z|x_n)`, the prior that maximizes the ELBO averaged
    over the data, with far fewer components than data points. The encoder is
    shared with the model, so the prior follows the encoder as it trains.

    Pass the model's encoder::

        encoder = nets.make_encoder(x_shape, z_dim)
        vae = VAE(x_shape, z_dim, encoder=encoder,
                  prior=priors.VampPrior(encoder, pseudo_inputs=500))

    :param encoder: a network mapping ``(K, *x_shape)`` to ``(loc, scale)`` of a
        diagonal Gaussian, the one the model's guide uses.
    :param pseudo_inputs: the number K of pseudo-inputs, drawn from
        :math:`\mathcal N(0.5, 0.1^2)` per pixel (seeded), or a tensor
        ``(K, *x_shape)`` of initial values (a random subset of the training data
        is a good start).
    :param tuple x_shape: shape of one input; read from ``encoder.x_shape`` if None.
    :param int seed: seed of the initial pseudo-inputs (independent of the global RNG).

    **References**

    [1] `VAE with a VampPrior`, Jakub M. Tomczak, Max Welling (AISTATS 2018)
    """

    def __init__(self, encoder, pseudo_inputs=500, x_shape=None, seed: int = 0):
        seed = _validate.integer("seed", seed, minimum=0, maximum=_validate.MAX_SEED)
        if not isinstance(encoder, nn.Module):
            raise TypeError(
                f"encoder must be a torch.nn.Module returning (loc, scale), got "
                f"{type(encoder).__name__}"
            )
        if x_shape is None:
            x_shape = getattr(encoder, "x_shape", None)
        if isinstance(pseudo_inputs, torch.Tensor):
            if not torch.is_floating_point(pseudo_inputs) or pseudo_inputs.dim() < 2:
                raise ValueError(
                    "pseudo_inputs as a tensor must be floating-point of shape (K, *x_shape), "
                    f"got dtype {pseudo_inputs.dtype} and shape {tuple(pseudo_inputs.shape)}"
                )
            if x_shape is not None and tuple(pseudo_inputs.shape[1:]) != tuple(x_shape):
                raise ValueError(
                    f"pseudo_inputs must have shape (K, {', '.join(map(str, x_shape))}), got "
                    f"{tuple(pseudo_inputs.shape)}"
                )
            init = pseudo_inputs.detach().clone().float()
        else:
            count = _check_dim("pseudo_inputs", pseudo_inputs)
            if x_shape is None:
                raise ValueError(
                    "VampPrior needs x_shape= (the encoder has no x_shape attribute) or "
                    "pseudo_inputs as a tensor of initial values"
                )
            generator = torch.Generator().manual_seed(seed)
            init = 0.5 + 0.1 * torch.randn(count, *tuple(x_shape), generator=generator)
        device = next((t.device for t in encoder.parameters()), init.device)
        with torch.no_grad():
            loc, scale = _encode(encoder, init.to(device))
        super().__init__(loc.shape[-1])
        self.encoder = encoder
        self.pseudo_inputs = nn.Parameter(init)

    @property
    def num_pseudo_inputs(self) -> int:
        return self.pseudo_inputs.shape[0]

    def distribution(self):
        loc, scale = _encode(self.encoder, self.pseudo_inputs)
        mixing = dist.Categorical(logits=loc.new_zeros(loc.shape[0]))
        return dist.MixtureSameFamily(mixing, dist.Normal(loc, scale).to_event(1))

    def extra_repr(self):
        return f"z_dim={self.z_dim}, pseudo_inputs={self.num_pseudo_inputs}"


def _encode(encoder, u):
    out = encoder(u)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            f"VampPrior's encoder must return (loc, scale) of q(z|x), got {type(out).__name__}"
        )
    loc, scale = out
    if loc.dim() != 2 or loc.shape != scale.shape:
        raise ValueError(
            f"VampPrior's encoder must return loc and scale of shape (K, z_dim), got "
            f"{tuple(loc.shape)} and {tuple(scale.shape)}"
        )
    return loc, scale


class Flow(Prior):
    r"""A learned normalizing-flow prior: a standard normal pushed through
    invertible maps :math:`f = f_L \circ \dots \circ f_1`,

    .. math:: z = f(u),\quad u \sim \mathcal N(0, I), \qquad
              \log p(z) = \log \mathcal N(f^{-1}(z); 0, I)
              + \log\Big|\det \frac{\partial f^{-1}(z)}{\partial z}\Big|.

    By default (``transforms`` an integer L) each :math:`f_l^{-1}` is an affine
    autoregressive map :math:`u_i = (z_i - \mu_i(z_{<i}))\, e^{-\alpha_i(z_{<i})}`
    with the order of the variables reversed from one layer to the next: the
    masked autoregressive flow (Papamakarios et al. 2017), whose density, the
    quantity the ELBO needs, takes one network pass per layer (drawing samples
    takes ``z_dim``).

    Any list of :mod:`pyro.distributions.transforms` works too (applied in order
    from the base to z, as in :class:`~pyro.distributions.TransformedDistribution`);
    its learnable ones (``TransformModule`` s) are registered as submodules, so
    they train and move with the model::

        import pyro.distributions.transforms as T
        prior = priors.Flow(8, transforms=[T.spline_coupling(8), T.affine_coupling(8)])

    :param int z_dim: latent dimension.
    :param transforms: the number of default autoregressive layers, or a list of
        Pyro transforms.
    :param tuple hidden: hidden widths of each autoregressive network (default
        ``(4 * z_dim + 2,)``); only with an integer ``transforms``.

    **References**

    [1] `Masked Autoregressive Flow for Density Estimation`, George Papamakarios,
    Theo Pavlakou, Iain Murray (NeurIPS 2017)
    """

    def __init__(self, z_dim: int, transforms=2, hidden=None):
        super().__init__(z_dim)
        if isinstance(transforms, int) and not isinstance(transforms, bool):
            layers = _check_dim("transforms", transforms)
            hidden = [4 * z_dim + 2] if hidden is None else [int(h) for h in hidden]
            if any(h < z_dim for h in hidden):
                raise ValueError(f"hidden widths must be at least z_dim={z_dim}, got {hidden}")
            self.layers = nn.ModuleList()
            for index in range(layers):
                order = torch.arange(z_dim)
                if index % 2:
                    order = order.flip(0)
                arn = AutoRegressiveNN(z_dim, hidden, permutation=order)
                self.layers.append(AffineAutoregressive(arn))
            # The density direction is the cheap one: each layer maps z towards u.
            self._transforms = None
        else:
            if hidden is not None:
                raise ValueError("hidden= applies only to the default layers (transforms=int)")
            try:
                transforms = list(transforms)
            except TypeError:
                raise TypeError(
                    "transforms must be a number of layers or a list of "
                    f"pyro.distributions.transforms, got {type(transforms).__name__}"
                ) from None
            if not transforms or not all(isinstance(t, Transform) for t in transforms):
                raise TypeError(
                    "transforms must be a non-empty list of torch/pyro Transform objects"
                )
            self.layers = nn.ModuleList(
                [
                    m
                    for t in transforms
                    for m in (t, getattr(t, "inv", None))
                    if isinstance(m, nn.Module)
                ]
            )
            self._transforms = transforms

    def transforms(self) -> list:
        """The maps from the base distribution to z, in order."""
        if self._transforms is not None:
            return list(self._transforms)
        return [layer.inv for layer in reversed(self.layers)]

    def distribution(self):
        zeros = self._zeros()
        base = dist.Normal(zeros, zeros + 1.0).to_event(1)
        return dist.TransformedDistribution(base, self.transforms())

    def extra_repr(self):
        return f"z_dim={self.z_dim}, transforms={len(self.transforms())}"


_REGISTRY = {
    "standard-normal": StandardNormal,
    "normal": Normal,
    "gaussian-mixture": GaussianMixture,
    "gmm": GaussianMixture,
    "laplace": Laplace,
    "flat": Flat,
    "flow": Flow,
    "vampprior": lambda z_dim, encoder, **kwargs: VampPrior(encoder, **kwargs),
}


def names(conditional: bool = False) -> list:
    """The priors' names as :func:`get` and the command line read them, from the one
    table they are built from: those of unconditional models p(z), or (``conditional=
    True``) of conditional ones p(z|c)."""
    return [k for k in _REGISTRY if (k in _CONDITIONAL) == conditional]


def get(name: str, z_dim: int, **kwargs) -> Prior:
    """Builds a prior from its command-line name (``standard-normal``, ``normal``,
    ``gaussian-mixture``/``gmm``, ``laplace``, ``flat``, ``flow``, ``vampprior``, and
    ``conditional-normal`` for conditional models). The VampPrior needs the model's
    encoder (``encoder=``; its ``z_dim`` is the encoder's) and the conditional normal
    the condition's size (``c_dim=``)."""
    if not isinstance(name, str):
        raise TypeError(f"prior name must be a string, got {name!r}")
    key = name.lower().replace("_", "-")
    try:
        cls = _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"unknown prior {name!r}; expected one of {names()} (or, for a conditional "
            f"model, {names(conditional=True)})"
        ) from None
    if key in _CONDITIONAL and "c_dim" not in kwargs:
        raise ValueError(
            f"prior {name!r} is the learned p(z|c) of a conditional model and needs c_dim= "
            f"(the cvae builds it itself); an unconditional model takes one of {names()}"
        )
    if key == "vampprior" and "encoder" not in kwargs:
        raise ValueError(
            "prior 'vampprior' is a mixture of the model's own posteriors and needs its "
            "encoder= (the vae builds it itself)"
        )
    return cls(z_dim, **kwargs)


class ConditionalNormal(Prior):
    r"""A learned conditional prior :math:`p(z|c) = \mathcal N(\mu(c), \mathrm{diag}\,\sigma^2(c))`,
    the prior network of the conditional VAE (Sohn, Lee & Yan 2015).

    :math:`\mu` and :math:`\sigma` come from one MLP on the flattened condition c
    (``hidden=()`` makes it a single linear map). Its last layer starts at zero
    weights and at the bias that gives :math:`\mu = 0,\ \sigma = 1`, so before
    training :math:`p(z|c) = \mathcal N(0, I)` for every c and the conditional VAE
    starts as a VAE whose networks read c.

    Called as ``prior(batch_shape, c)`` with ``c`` of shape ``(*batch_shape, c_dim)``.

    :param int c_dim: size of the flattened condition.
    :param int z_dim: latent dimension.
    :param tuple hidden: hidden widths of the prior network.

    **References**

    [1] `Learning Structured Output Representation using Deep Conditional Generative
    Models`, Kihyuk Sohn, Honglak Lee, Xinchen Yan (NeurIPS 2015)
    """

    def __init__(self, c_dim: int, z_dim: int, hidden=(256,)):
        super().__init__(z_dim)
        hidden = _validate.widths("hidden", hidden)
        from .nets import MIN_SCALE, MLP

        self.c_dim = _check_dim("c_dim", c_dim)
        self.min_scale = MIN_SCALE
        self.net = MLP(c_dim, tuple(hidden), 2 * z_dim)
        last = self.net[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias[:z_dim] = 0.0
            last.bias[z_dim:] = _inverse_softplus(1.0 - MIN_SCALE)

    def loc_scale(self, c: torch.Tensor):
        r""":math:`(\mu(c), \sigma(c))`, each of shape ``(*c.shape[:-1], z_dim)``."""
        loc, raw_scale = self.net(c.to(self._anchor.dtype)).chunk(2, dim=-1)
        return loc, softplus(raw_scale) + self.min_scale

    def forward(self, batch_shape=(), c=None) -> dist.TorchDistribution:
        if c is None:
            raise ValueError(
                "ConditionalNormal is a conditional prior p(z|c) and needs c= of shape "
                f"(..., {self.c_dim})"
            )
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"c must be a torch.Tensor, got {type(c).__name__}")
        if c.dim() < 1 or c.shape[-1] != self.c_dim:
            raise ValueError(
                f"c must have shape (..., {self.c_dim}) for this prior (c_dim={self.c_dim}), "
                f"got {tuple(c.shape)}"
            )
        loc, scale = self.loc_scale(c)
        prior = _densities.Normal(loc, scale).to_event(1)
        batch_shape = torch.Size(batch_shape)
        if batch_shape and prior.batch_shape != batch_shape:
            try:
                prior = prior.expand(batch_shape)
            except (RuntimeError, ValueError):
                raise ValueError(
                    f"c of shape {tuple(c.shape)} does not fit batch_shape {tuple(batch_shape)}"
                ) from None
        return prior

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, z_dim={self.z_dim}"


__all__.append("ConditionalNormal")
_REGISTRY["conditional-normal"] = lambda z_dim, c_dim, **kwargs: ConditionalNormal(
    c_dim, z_dim, **kwargs
)
_CONDITIONAL = ("conditional-normal",)
