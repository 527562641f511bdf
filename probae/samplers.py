r"""Densities fitted to the codes of a trained model, to sample from instead of its prior.

A VAE's aggregate posterior :math:`q(z) = \frac1N\sum_n q(z|x_n)` rarely fills its
prior: decoding prior draws from the holes between the clusters of codes gives blurred
or implausible samples. Fitting a density :math:`\hat p(z)` to the codes
:math:`\{\mathrm{encode}(x_n)\}` after training and decoding draws from it improves
samples more than most changes to training (ex-post density estimation, Ghosh et al.
2020; the second stage of Dai & Wipf 2019), and it is the only way to sample from a
deterministic autoencoder, which has no prior at all.

- :class:`GaussianMixture`: :math:`\hat p(z) = \sum_k \pi_k\mathcal N(z;\mu_k,\Sigma_k)`,
  fitted by EM (scikit-learn).
- :class:`Flow`: a normalizing flow :math:`\hat p(z) = \mathcal N(u; 0, I)\,
  |\det \partial u/\partial z|` with :math:`u = f^{-1}(z)`, Pyro's spline or affine
  coupling transforms, fitted by maximum likelihood.
- :class:`TwoStage`: a second VAE trained on the codes (Dai & Wipf 2019), whose prior
  draws decoded are the codes' draws.

Every sampler is an :class:`torch.nn.Module` with ``fit(model, data)``, ``sample(n)`` and
``log_prob(z)``; its state (buffers and weights) goes through ``state_dict`` and
``torch.save`` / ``torch.load(weights_only=True)``. A probae model decodes its draws with
``model.sample(n, sampler=s)``::

    s = samplers.GaussianMixture(components=10).fit(model, train)
    images = model.sample(64, sampler=s)

**References**

[1] `From Variational to Deterministic Autoencoders`, Partha Ghosh, Mehdi S. M. Sajjadi,
Antonio Vergari, Michael Black, Bernhard Schölkopf (ICLR 2020)

[2] `Diagnosing and Enhancing VAE Models`, Bin Dai, David Wipf (ICLR 2019)

[3] `Neural Spline Flows`, Conor Durkan, Artur Bekasov, Iain Murray, George Papamakarios
(NeurIPS 2019)

[4] `Density estimation using Real NVP`, Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio
(ICLR 2017)
"""

from __future__ import annotations

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro import poutine
from torch import nn

from . import _validate
from ._common import device_of, positive_int, prepare

__all__ = ["CodeSampler", "Flow", "GaussianMixture", "TwoStage", "encode_all"]


@torch.no_grad()
def encode_all(model, data, batch_size: int = 1000, codes: str = "mean") -> torch.Tensor:
    """The codes of every point of ``data`` under ``model``, in eval mode, shape
    ``(N, z_dim)``.

    :param model: a trained probae model (anything with ``encode``, and a ``guide`` with a
        site ``"z"`` for ``codes="posterior"``).
    :param data: a :class:`~probae.data.Dataset` or tensor, usually the training data.
    :param int batch_size: points encoded at once.
    :param str codes: ``"mean"``: ``model.encode(x)``, the posterior mean of a VAE and f(x) of
        a deterministic autoencoder; ``"posterior"``: one draw :math:`z \\sim q(z|x)` per point
        from the guide, samples of the aggregate posterior :math:`q(z)` itself (the same as
        ``"mean"`` for a point-mass guide).
    """
    if not callable(getattr(model, "encode", None)):
        raise TypeError(
            f"model must have an encode(x) method (a probae model), got {type(model).__name__}"
        )
    if codes not in ("mean", "posterior"):
        raise ValueError(f"codes must be 'mean' or 'posterior', got {codes!r}")
    batch_size = positive_int("batch_size", batch_size)
    x = prepare(data, model, check_support=False)[0]

    def code(xb):
        if codes == "mean":
            return model.encode(xb)
        return poutine.trace(model.guide).get_trace(xb).nodes["z"]["value"]

    was_training = model.training
    model.eval()
    try:
        result = torch.cat([code(xb) for xb in x.split(batch_size)])
    finally:
        model.train(was_training)
    if result.dim() != 2:
        raise ValueError(
            f"the model's codes must be vectors, shape (N, z_dim), got {tuple(result.shape)}"
        )
    return result


def _check_codes(codes) -> torch.Tensor:
    if not isinstance(codes, torch.Tensor) or not torch.is_floating_point(codes):
        raise TypeError(f"codes must be a floating-point torch.Tensor, got {type(codes).__name__}")
    if codes.dim() != 2 or codes.shape[0] < 2:
        raise ValueError(f"codes must have shape (N, D) with N >= 2, got {tuple(codes.shape)}")
    if not _validate.all_finite(codes):
        raise ValueError("codes contain NaN or infinite values")
    return codes.detach()


class CodeSampler(nn.Module):
    """Base class of the samplers: ``fit`` encodes the data and calls :meth:`fit_codes`;
    subclasses define :meth:`fit_codes` and :meth:`distribution`."""

    def fit(self, model, data, batch_size: int = 1000, codes: str = "mean"):
        """Fits the density to the codes of ``data`` under ``model``; returns ``self``.

        :param model: a trained probae model.
        :param data: a :class:`~probae.data.Dataset` or tensor, usually the training data.
        :param int batch_size: points encoded at once.
        :param str codes: ``"mean"`` or ``"posterior"`` draws (see :func:`encode_all`); the
            draws are made from the sampler's ``seed`` where it has one, leaving the global
            random state untouched, so a fit is the same every time.
        """
        seed = getattr(self, "seed", None) if codes == "posterior" else None
        if seed is None:
            return self.fit_codes(encode_all(model, data, batch_size, codes))
        device = device_of(model) if isinstance(model, nn.Module) else torch.device("cpu")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            drawn = encode_all(model, data, batch_size, codes)
        return self.fit_codes(drawn)

    def fit_codes(self, codes: torch.Tensor):
        """Fits the density to the rows of ``codes``, shape ``(N, D)``; returns ``self``."""
        raise NotImplementedError(f"{type(self).__name__} must define fit_codes(codes)")

    def distribution(self) -> dist.TorchDistribution:
        """The fitted density as a distribution with ``event_shape == (D,)``."""
        raise NotImplementedError(f"{type(self).__name__} must define distribution()")

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit_codes` has run."""
        raise NotImplementedError(f"{type(self).__name__} must define the fitted property")

    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError(
                f"{type(self).__name__} is not fitted: call .fit(model, train_data) first"
            )

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` codes, shape ``(n, D)``."""
        n = positive_int("n", n)
        self._check_fitted()
        return self.distribution().sample((n,))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log\hat p(z)` of each row of ``z``."""
        self._check_fitted()
        return self.distribution().log_prob(z)


class GaussianMixture(CodeSampler):
    r"""A Gaussian mixture over codes,
    :math:`\hat p(z) = \sum_{k=1}^K \pi_k \mathcal N(z; \mu_k, \Sigma_k)`, the maximum
    likelihood fit by EM (scikit-learn's ``GaussianMixture``) to the codes.

    :param int components: K (at most the number of codes).
    :param str covariance: ``"full"`` or ``"diag"`` covariances.
    :param int seed: seeds EM's initialization.
    """

    def __init__(self, components: int = 10, covariance: str = "full", seed: int = 0):
        super().__init__()
        self.components = positive_int("components", components)
        if covariance not in ("full", "diag"):
            raise ValueError(f"covariance must be 'full' or 'diag', got {covariance!r}")
        self.covariance = covariance
        self.seed = int(seed)
        for name in ("logits", "locs", "scale_tril"):
            self.register_buffer(name, torch.empty(0))

    @property
    def fitted(self) -> bool:
        return self.logits.numel() > 0

    @torch.no_grad()
    def fit_codes(self, codes: torch.Tensor):
        from sklearn.mixture import GaussianMixture as _EM
        from threadpoolctl import threadpool_limits

        codes = _check_codes(codes)
        if self.components > codes.shape[0]:
            raise ValueError(
                f"components={self.components} exceeds the number of codes ({codes.shape[0]})"
            )
        mixture = _EM(self.components, covariance_type=self.covariance, random_state=self.seed)
        # EM on codes is small linear algebra: one BLAS thread is faster than many.
        with threadpool_limits(limits=1):
            mixture.fit(codes.double().cpu().numpy())
        covariances = torch.as_tensor(mixture.covariances_, dtype=torch.float64)
        if self.covariance == "diag":
            covariances = torch.diag_embed(covariances)
        like = {"device": codes.device, "dtype": codes.dtype}
        self.logits = torch.as_tensor(mixture.weights_, dtype=torch.float64).log().to(**like)
        self.locs = torch.as_tensor(mixture.means_, dtype=torch.float64).to(**like)
        self.scale_tril = torch.linalg.cholesky(covariances).to(**like)
        return self

    def distribution(self):
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits),
            dist.MultivariateNormal(self.locs, scale_tril=self.scale_tril),
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The shapes are known once fitted: take the stored ones.
        for name in ("logits", "locs", "scale_tril"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return f"components={self.components}, covariance={self.covariance!r}"


class Flow(CodeSampler):
    r"""A normalizing flow over codes. Codes are standardized,
    :math:`s = (z - m) / \sigma` per dimension, and
    :math:`s = f_L \circ \dots \circ f_1(u)` with :math:`u \sim \mathcal N(0, I)`; each
    :math:`f_l` is a coupling layer (Pyro's ``spline_coupling``, rational-quadratic splines
    on :math:`[-3, 3]` and the identity outside, Durkan et al. 2019; or ``affine_coupling``,
    Dinh et al. 2017), with the dimensions reversed between layers. One-dimensional codes use
    element-wise splines. The density is

    .. math:: \log\hat p(z) = \log\mathcal N(u; 0, I) - \sum_l \log|\det J_{f_l}|
              - \sum_d \log\sigma_d,

    fitted by maximum likelihood with Adam on mini-batches of the codes.

    :param str transform: ``"spline"`` or ``"affine"``.
    :param int layers: L, the number of coupling layers.
    :param tuple hidden: hidden widths of each coupling network.
    :param int steps: optimization steps.
    :param int batch_size: codes per step.
    :param float lr: Adam's learning rate.
    :param int seed: seeds the initialization, permutations and batches.
    """

    def __init__(
        self,
        transform: str = "spline",
        layers: int = 4,
        hidden=(64, 64),
        steps: int = 2000,
        batch_size: int = 256,
        lr: float = 5e-3,
        seed: int = 0,
    ):
        super().__init__()
        if transform not in ("spline", "affine"):
            raise ValueError(f"transform must be 'spline' or 'affine', got {transform!r}")
        self.transform = transform
        self.layers = positive_int("layers", layers)
        self.hidden = _validate.widths("hidden", hidden)
        self.steps = positive_int("steps", steps)
        self.batch_size = positive_int("batch_size", batch_size)
        self.lr = _validate.positive("lr", lr)
        self.seed = int(seed)
        self.transforms = nn.ModuleList()
        self.register_buffer("shift", torch.empty(0))
        self.register_buffer("scale", torch.empty(0))

    @property
    def fitted(self) -> bool:
        return self.shift.numel() > 0

    def _build(self, dim: int) -> nn.ModuleList:
        if dim == 1:
            return nn.ModuleList(T.spline(1, count_bins=8, bound=3.0) for _ in range(self.layers))
        if self.transform == "spline":
            return nn.ModuleList(
                T.spline_coupling(dim, hidden_dims=list(self.hidden), bound=3.0)
                for _ in range(self.layers)
            )
        return nn.ModuleList(
            T.affine_coupling(dim, hidden_dims=list(self.hidden)) for _ in range(self.layers)
        )

    def _chain(self) -> list:
        # Between couplings the dimensions are reversed, so that the half that was
        # conditioned on is transformed next (the alternating masks of Real NVP).
        dim = self.shift.shape[0]
        if dim == 1:
            return list(self.transforms)
        reverse = T.Permute(torch.arange(dim - 1, -1, -1, device=self.shift.device))
        chain = []
        for layer in self.transforms:
            chain += [layer, reverse]
        return chain[:-1]

    def fit_codes(self, codes: torch.Tensor):
        codes = _check_codes(codes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.transforms = self._build(codes.shape[1]).to(device=codes.device, dtype=codes.dtype)
        self.shift = codes.mean(0)
        self.scale = codes.std(0).clamp(min=1e-6)
        standardized = (codes - self.shift) / self.scale
        optimizer = torch.optim.Adam(self.transforms.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        n = codes.shape[0]
        for _ in range(self.steps):
            index = torch.randint(n, (min(self.batch_size, n),), generator=generator)
            batch = standardized[index.to(codes.device)]
            loss = -self._base_flow().log_prob(batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return self

    def _base_flow(self):
        dim = self.shift.shape[0]
        base = dist.Normal(self.shift.new_zeros(dim), self.shift.new_ones(dim)).to_event(1)
        return dist.TransformedDistribution(base, self._chain())

    def distribution(self):
        standardize = T.AffineTransform(self.shift, self.scale, event_dim=1)
        return dist.TransformedDistribution(self._base_flow(), [standardize])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The transforms are built for the codes' size: rebuild them before loading.
        if prefix + "shift" in state_dict and not self.fitted:
            shift = state_dict[prefix + "shift"]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self.transforms = self._build(shift.shape[0]).to(
                    device=shift.device, dtype=shift.dtype
                )
            self.shift = torch.empty_like(shift)
            self.scale = torch.empty_like(shift)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return f"transform={self.transform!r}, layers={self.layers}, hidden={self.hidden}"


class TwoStage(CodeSampler):
    r"""The second stage of Dai & Wipf (2019): a VAE fitted to the (standardized) codes,
    :math:`u \sim \mathcal N(0, I)`, :math:`z \mid u \sim \mathcal N(g(u), \gamma^2 I)`,
    with a Gaussian encoder :math:`q(u|z)` and the observation scale :math:`\gamma` learned.
    The first stage leaves the codes on a set the prior does not match; the second VAE,
    whose data now fill their whole space, learns to map :math:`\mathcal N(0, I)` onto that
    set, and :math:`\gamma \to 0` as it does. Draws are :math:`g(u)`, the decoder's mean,
    mapped back to the codes' scale.

    It has no closed-form density: :meth:`log_prob` is its ELBO (a lower bound), per code.

    :param int u_dim: the second latent's size (default: the codes' size).
    :param tuple hidden: hidden widths of the second VAE's networks.
    :param int epochs: passes over the codes (trained with :func:`probae.fit`).
    :param int batch_size: codes per step.
    :param float lr: the learning rate.
    :param int seed: seeds the initialization and the batches.
    """

    def __init__(
        self,
        u_dim: int | None = None,
        hidden=(128, 128),
        epochs: int = 100,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
    ):
        super().__init__()
        self.u_dim = None if u_dim is None else positive_int("u_dim", u_dim)
        self.hidden = _validate.widths("hidden", hidden)
        self.epochs = positive_int("epochs", epochs)
        self.batch_size = positive_int("batch_size", batch_size)
        self.lr = _validate.positive("lr", lr)
        self.seed = int(seed)
        self.vae = None
        self.register_buffer("shift", torch.empty(0))
        self.register_buffer("scale", torch.empty(0))

    @property
    def fitted(self) -> bool:
        return self.shift.numel() > 0

    def _build(self, dim: int):
        from . import likelihoods
        from .models.vae import VAE

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return VAE(
                (dim,),
                self.u_dim or dim,
                likelihood=likelihoods.Gaussian(scale=1.0, learn_scale=True),
                hidden=self.hidden,
            )

    def fit_codes(self, codes: torch.Tensor):
        from .train import fit

        codes = _check_codes(codes)
        self.shift = codes.mean(0)
        self.scale = codes.std(0).clamp(min=1e-6)
        self.vae = self._build(codes.shape[1]).to(device=codes.device, dtype=codes.dtype)
        fit(
            self.vae,
            (codes - self.shift) / self.scale,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            progress=False,
        )
        self.vae.eval()
        return self

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        n = positive_int("n", n)
        self._check_fitted()
        return self.vae.sample(n) * self.scale + self.shift

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        r"""The second VAE's ELBO of each code (one draw), a lower bound on
        :math:`\log\hat p(z)`."""
        from .evaluate import elbo

        self._check_fitted()
        standardized = (z - self.shift) / self.scale
        return elbo(self.vae, standardized) - self.scale.log().sum()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "shift" in state_dict and not self.fitted:
            shift = state_dict[prefix + "shift"]
            self.vae = self._build(shift.shape[0]).to(device=shift.device, dtype=shift.dtype)
            self.shift = torch.empty_like(shift)
            self.scale = torch.empty_like(shift)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return f"u_dim={self.u_dim}, hidden={self.hidden}, epochs={self.epochs}"
