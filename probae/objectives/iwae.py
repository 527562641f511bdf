r"""The importance-weighted autoencoder bound and its gradient estimators.

:class:`IWAE` is the bound of Burda et al. (2016),

.. math:: \mathcal L_K(x) = \mathbb E\Big[\log \frac1K \sum_{k=1}^K
          \frac{p(x, z_k)}{q(z_k|x)}\Big],

trained by the plain reparameterized gradient. ``_WeightedIWAE`` writes an
importance-weighted objective's gradient per particle, so that the guide's part can
be reweighted: :class:`DReGIWAE` (Tucker et al., 2019) is an unbiased estimator of
the same gradient whose signal-to-noise ratio does not vanish as K grows, and
:class:`StickingTheLandingIWAE` (Roeder et al., 2017) drops the score term (biased
for K > 1). The bounds between the ELBO and IWAE build on the same class, in
:mod:`probae.objectives.miwae`.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import RenyiELBO
from pyro.infer.util import get_dependent_plate_dims, is_identically_zero, torch_sum
from pyro.poutine.util import prune_subsample_sites

from .. import importance

__all__ = ["DReGIWAE", "IWAE", "StickingTheLandingIWAE"]


class IWAE(RenyiELBO):
    r"""The importance-weighted autoencoder bound (Burda et al., 2016),

    .. math:: \mathcal L_K(x) = \mathbb E\Big[\log \frac1K \sum_{k=1}^K
              \frac{p(x, z_k)}{q(z_k|x)}\Big],

    which is :class:`~pyro.infer.RenyiELBO` at :math:`\alpha = 0`, with a
    :meth:`differentiable_loss` so that parameters living in modules (not in
    Pyro's param store) are trained too. The log-sum-exp runs over particles for
    each data point separately. Its gradient equals RenyiELBO's surrogate:
    the normalized weights times the gradient of each log-weight.

    :param int num_particles: K, drawn in one vectorized pass.
    """

    def __init__(
        self,
        num_particles: int = 5,
        max_plate_nesting: float = float("inf"),
        enumerate: bool = False,
    ):
        if enumerate and max_plate_nesting == float("inf"):
            raise ValueError("IWAE(enumerate=True) needs a finite max_plate_nesting")
        super().__init__(
            alpha=0.0,
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )
        self.enumerate = enumerate

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The negative IWAE bound, summed over data points, differentiable in every
        parameter (reparameterized guides only)."""
        if self.enumerate:
            return self._enumerated_loss(model, guide, args, kwargs)
        particles = []  # one vectorized pass, or one pass per particle
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            log_w = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_w = log_w + torch_sum(site["log_prob"], sum_dims)
            for name, site in guide_trace.nodes.items():
                if site["type"] == "sample":
                    _, score_function_term, _ = site["score_parts"]
                    if not is_identically_zero(score_function_term):
                        raise ValueError(
                            f"loss='iwae' needs reparameterized guide sites; {name!r} is not"
                        )
                    log_w = log_w - torch_sum(site["log_prob"], sum_dims)
            particles.append(log_w)
        if self.vectorize_particles and self.num_particles > 1:
            log_w = particles[0]
        else:
            log_w = torch.stack(particles)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return -bound.sum()

    def _enumerated_loss(self, model, guide, args, kwargs):
        # Enumerated sites are summed out of each weight (importance.log_weights),
        # with site scales applied as TraceEnum_ELBO applies them.
        args = importance.Arguments(args, kwargs) if kwargs else args
        nesting = self.max_plate_nesting - 1  # less the particle plate
        pair = importance.traces(model, guide, args, self.num_particles, nesting)
        for name, site in prune_subsample_sites(pair[0]).nodes.items():
            if site["type"] == "sample" and not site["is_observed"]:
                if not getattr(site["fn"], "has_rsample", False):
                    raise ValueError(
                        f"loss='iwae' needs reparameterized guide sites; {name!r} is not"
                    )
        log_w = importance.log_weights(
            model, guide, args, self.num_particles, nesting, scaled=True, trace_pair=pair
        )
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return -bound.sum()


class _WeightedIWAE(IWAE):
    r"""An importance-weighted objective whose gradient is written per particle k:

    .. math:: \nabla_\theta = \sum_k a_k \nabla_\theta \log w_k,\qquad
              \nabla_\phi = \sum_k b_k\, \nabla^{\text{path}}_\phi \log w_k
                          - \sum_k s_k\, \nabla_\phi \log q_\phi(z_k|x)\big|_{z_k},

    with model parameters :math:`\theta`, guide parameters :math:`\phi`, the
    reparameterized path :math:`z_k = z(\epsilon_k, \phi)` and weights a, b, s that
    carry no gradient. The plain reparameterized gradient of a bound has
    a = b = s; the estimators below change b and s. The surrogate
    :math:`\sum_k a_k \log w_k` is traced once; the guide's latent values pass
    their gradient on scaled by :math:`b_k / a_k`, and a zero-valued term
    :math:`\sum_k (a_k - s_k)\,(\log q_\phi(\bar z_k|x) - \text{its value})`, with
    :math:`\bar z_k` held fixed, adds back the score part. The loss's value is the
    negative bound.
    """

    #: the weights b differ from a: guide-site gradients are rescaled (one site only)
    rescales_path = False
    gradient_name = "standard"
    loss_name = "iwae"

    def _particles(self, model, guide, args, kwargs):
        """Log-weights ``(K, N)`` and, per guide site, its value and
        :math:`\\log q` at the detached value, shape ``(K, N)``."""
        what = (
            f"loss={self.loss_name!r}"
            if self.gradient_name == "standard"
            else (f"gradient={self.gradient_name!r}")
        )
        if self.enumerate:
            if kwargs:
                raise ValueError(f"{what} takes positional model arguments only")
            nesting = self.max_plate_nesting - 1
            pair = importance.traces(model, guide, args, self.num_particles, nesting)
            log_w = importance.log_weights(
                model, guide, args, self.num_particles, nesting, scaled=True, trace_pair=pair
            )
            guide_trace = prune_subsample_sites(pair[0])

            def reduce(site, log_prob):
                return importance._per_point(site, log_prob, nesting)

        else:
            for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
                sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
                log_w = 0.0
                for site in model_trace.nodes.values():
                    if site["type"] == "sample":
                        log_w = log_w + torch_sum(site["log_prob"], sum_dims)
                for site in guide_trace.nodes.values():
                    if site["type"] == "sample":
                        log_w = log_w - torch_sum(site["log_prob"], sum_dims)

            def reduce(site, log_prob):
                return torch_sum(log_prob, sum_dims)

        single = self.num_particles == 1 and not self.enumerate  # no particle dim then
        if single:
            log_w = log_w.unsqueeze(0)
        latents = []
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if not getattr(site["fn"], "has_rsample", False):
                raise ValueError(f"{what} needs reparameterized guide sites; {name!r} is not")
            value = site["value"]
            log_q = reduce(site, site["fn"].log_prob(value.detach()))
            if single:
                log_q, value = log_q.unsqueeze(0), value.unsqueeze(0)
            latents.append((name, value, log_q))
        if not isinstance(log_w, torch.Tensor) or log_w.dim() != 2:
            raise ValueError(
                f"{what} needs per-point log-weights of shape (particles, points): every "
                "sample site inside one pyro.plate('data')"
            )
        if self.rescales_path and len(latents) != 1:
            raise ValueError(
                f"{what} rescales the gradient of the guide's latent per particle and supports "
                f"a guide with one latent sample site; this guide has {[n for n, _, _ in latents]}"
            )
        return log_w, latents

    def _weights(self, log_w):
        """``(bound per point (N,), log a, log b, s)``, each weight of shape ``(K, N)``."""
        raise NotImplementedError(f"{type(self).__name__} must define _weights(log_w)")

    def differentiable_loss(self, model, guide, *args, **kwargs):
        log_w, latents = self._particles(model, guide, args, kwargs)
        bound, log_a, log_b, s = self._weights(log_w)
        log_a, log_b, s = log_a.detach(), log_b.detach(), s.detach()
        a = log_a.exp()
        if self.rescales_path:
            _, value, _ = latents[0]
            if value.shape[:2] != log_w.shape:
                raise ValueError(
                    f"gradient={self.gradient_name!r} needs the guide's latent to have the "
                    f"particle and data dims first, got shape {tuple(value.shape)}"
                )
            ratio = (log_b - log_a).exp().reshape(*log_w.shape, *([1] * (value.dim() - 2)))
            if value.requires_grad:
                value.register_hook(lambda grad: grad * ratio)
        surrogate = (a * log_w).sum()
        for _, _, log_q in latents:
            score = log_q - log_q.detach()
            surrogate = surrogate + ((a - s) * score).sum()
        bound = bound.sum()
        return -(bound.detach() + surrogate - surrogate.detach())


def _normalized(log_w, dim=0):
    return log_w - log_w.logsumexp(dim, keepdim=True)


class StickingTheLandingIWAE(_WeightedIWAE):
    r"""The IWAE bound with the sticking-the-landing gradient (Roeder et al., 2017):
    the guide's gradient keeps the path derivative through
    :math:`z_k = z(\epsilon_k, \phi)` and drops the score term
    :math:`-\nabla_\phi \log q_\phi(z|x)|_{z}`, whose expectation is zero. It
    has zero variance when q is the exact posterior. For the IWAE bound it is
    biased for K > 1 (Tucker et al., 2019); :class:`DReGIWAE` is its unbiased
    counterpart. The model's gradient is the usual one.

    **References**

    [1] `Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
    Variational Inference`, Geoffrey Roeder, Yuhuai Wu, David Duvenaud (NIPS 2017)
    """

    gradient_name = "stl"

    def _weights(self, log_w):
        k = log_w.shape[0]
        log_a = _normalized(log_w)
        return log_w.logsumexp(0) - math.log(k), log_a, log_a, torch.zeros_like(log_w)


class DReGIWAE(_WeightedIWAE):
    r"""The IWAE bound with the doubly reparameterized gradient (Tucker et al., 2019).
    With normalized weights :math:`\tilde w_k = w_k / \sum_j w_j`, the guide's
    gradient is

    .. math:: \nabla_\phi \mathcal L_K = \mathbb E\Big[\sum_k \tilde w_k^2\,
              \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi}\Big],

    an unbiased estimator of the same gradient whose signal-to-noise ratio does not
    vanish as K grows (Rainforth et al., 2018). The model's gradient is the usual
    :math:`\sum_k \tilde w_k \nabla_\theta \log w_k`. Needs a reparameterized guide
    with one latent sample site.

    **References**

    [1] `Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives`,
    George Tucker, Dieterich Lawson, Shixiang Gu, Chris J. Maddison (ICLR 2019)
    """

    rescales_path = True
    gradient_name = "dreg"

    def _weights(self, log_w):
        k = log_w.shape[0]
        log_a = _normalized(log_w)
        return log_w.logsumexp(0) - math.log(k), log_a, 2 * log_a, torch.zeros_like(log_w)
