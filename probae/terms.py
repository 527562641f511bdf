r"""The terms of a loss: distortion, rate and penalty, read off the traces the ELBO
already computed.

For a model/guide pair the negative ELBO of a batch splits as

.. math:: -\mathrm{ELBO} = \underbrace{-\mathbb E_q \log p(x|z)}_{D\ \text{(distortion)}}
          + \underbrace{\mathbb E_q[\log q(z|x) - \log p(z)]}_{R\ \text{(rate)}}
          + \Omega,

where :math:`\Omega` holds what is neither: ``pyro.factor`` sites (the extra
penalty of the sparse and contractive autoencoders), and the latent terms of a
Delta guide (a point mass has no KL; :math:`-\log p(z)` is a regularizer, the L1
penalty of a Laplace prior). With ``TraceMeanField_ELBO`` the rate is the
closed-form KL where one exists, exactly as the loss computes it, so
:math:`D + R + \Omega` is the loss itself; with ``Trace_ELBO`` it is the same Monte
Carlo estimate. Site scales (beta) stay applied: the rate is the loss's KL term.

Per latent dimension, :math:`\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))` in closed form
(factorized Gaussian guides and priors) sums to the rate of an unscaled site.

**References**

- Alemi et al. (2018), *Fixing a Broken ELBO*, ICML.
"""

from __future__ import annotations

import torch
from pyro.distributions import Delta, Unit
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceEnum_ELBO, TraceMeanField_ELBO

from ._factorized import closed_form_kl, innermost

__all__ = ["LossTerms", "NAMES"]

NAMES = ("distortion", "rate", "penalty")
#: where an objective leaves a guide site's closed-form KL for :class:`LossTerms`
KL_KEY = "_probae_kl"


def _per_dimension(q, p):
    """KL(q || p) per element of the event, or None where no closed form exists."""
    q, p = innermost(q), innermost(p)
    if q.event_shape != () or p.event_shape != () or isinstance(q, Delta):
        return None  # not factorized per dimension, or a point mass (no KL)
    kl = closed_form_kl(q, p)
    return kl if torch.is_tensor(kl) and kl.dim() >= 1 else None


class LossTerms:
    """Records the terms of every ``differentiable_loss`` call of a Pyro ELBO.

    The ELBO's ``_get_traces`` is wrapped (on this instance only), so the traces
    Pyro builds for the loss are read, not recomputed. After a call,
    :attr:`last` maps ``"distortion"``, ``"rate"``, ``"penalty"`` to 0-d tensors
    summed over the batch (averaged over particles), or is None where the
    objective has no such split (enumerated discrete sites).

    With :attr:`detail` set, calls also add the closed-form KL per latent
    dimension (summed over points, :attr:`kl_per_dim`) and collect the guide's
    means (:attr:`means`) for active units.

    :param elbo: a Pyro ELBO (Trace_ELBO, TraceMeanField_ELBO, IWAE, ...).
    """

    def __init__(self, elbo):
        self.elbo = elbo
        self.supported = not isinstance(elbo, TraceEnum_ELBO) and hasattr(elbo, "_get_traces")
        self.closed_form = isinstance(elbo, TraceMeanField_ELBO)
        self.num_particles = getattr(elbo, "num_particles", 1)
        self.last = None
        self.detail = False
        self.kl_per_dim = None
        self.means = []
        if self.supported:
            # an objective reused by a second fit is wrapped once, around Pyro's own method
            original = getattr(elbo, "_probae_get_traces", elbo._get_traces)
            elbo._probae_get_traces = original

            def _get_traces(model, guide, args, kwargs):
                self.last = None
                for model_trace, guide_trace in original(model, guide, args, kwargs):
                    yield model_trace, guide_trace
                    # after the ELBO's particle loss: it may leave its closed-form KL
                    # on the guide site (objectives.MeanFieldELBO), read here, not redone
                    self._record(model_trace, guide_trace)

            elbo._get_traces = _get_traces

    def reset_detail(self):
        self.kl_per_dim, self.means = None, []

    def _record(self, model_trace, guide_trace):
        with torch.no_grad():
            terms = self._split(model_trace, guide_trace)
            if self.last is None:
                self.last = terms
            else:
                self.last = {k: self.last[k] + terms[k] for k in NAMES}
            if self.detail:
                self._record_detail(model_trace, guide_trace)

    def _split(self, model_trace, guide_trace) -> dict:
        zero = None
        distortion = rate = penalty = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            lp = site["log_prob_sum"]
            zero = lp if zero is None else zero
            if site["is_observed"]:
                if isinstance(innermost(site["fn"]), Unit):
                    penalty = penalty - lp
                else:
                    distortion = distortion - lp
                continue
            guide_site = guide_trace.nodes.get(name)
            q_lp = 0.0 if guide_site is None else guide_site["log_prob_sum"]
            if guide_site is not None and isinstance(innermost(guide_site["fn"]), Delta):
                penalty = penalty + q_lp - lp
                continue
            if self.closed_form and guide_site is not None:
                kl = guide_site.get(KL_KEY)
                if kl is None:
                    kl = closed_form_kl(guide_site["fn"], site["fn"])
                if kl is not None:
                    kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
                    rate = rate + (kl.sum() if torch.is_tensor(kl) else kl)
                    continue
            rate = rate + q_lp - lp
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and name not in model_trace.nodes:
                penalty = penalty + site["log_prob_sum"]  # auxiliary sites enter as -log q
        # device tensors throughout: reading them is left to the caller (no sync here)
        like = zero if zero is not None else torch.zeros(())
        return {
            key: (value.detach() if torch.is_tensor(value) else like.new_full((), value))
            / self.num_particles
            for key, value in zip(NAMES, (distortion, rate, penalty), strict=True)
        }

    def _record_detail(self, model_trace, guide_trace):
        guide_site, model_site = guide_trace.nodes.get("z"), model_trace.nodes.get("z")
        if guide_site is None or model_site is None or guide_site["type"] != "sample":
            return
        q = guide_site["fn"]
        try:
            mean = q.mean
        except NotImplementedError:
            mean = None
        if mean is not None and mean.dim() >= 2:  # the first particle's (N, D) means
            self.means.append(mean.reshape(-1, *mean.shape[-2:])[0])
        kl = _per_dimension(q, model_site["fn"])
        if kl is None or self.kl_per_dim is False:
            self.kl_per_dim = False  # no closed form: not recorded
            return
        total = kl.reshape(-1, kl.shape[-1]).sum(0) / self.num_particles
        self.kl_per_dim = total if self.kl_per_dim is None else self.kl_per_dim + total
