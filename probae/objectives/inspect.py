r"""Pair inspection: what an objective must know about a model/guide pair.

:func:`inspect_pair` runs a pair once on a batch and reports, as a :class:`PairInfo`,
its sites marked for enumeration (in the guide or only in the model), its plate
nesting, and latent model sites that the guide does not sample. Such a site
:math:`s` is drawn from its prior inside the model, so its prior is its proposal,
:math:`q(s) = p(s)`, and :func:`prior_proposed` masks its log-density out of the
model, so that :math:`\log p(s)` cancels from every importance weight.
"""

from __future__ import annotations

from typing import NamedTuple

from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites

from .. import importance

__all__ = ["PairInfo", "inspect_pair", "prior_proposed"]


class PairInfo(NamedTuple):
    """What :func:`inspect_pair` found in one run of a pair.

    :ivar list guide_enumerated: guide sites marked ``infer={"enumerate": ...}``.
    :ivar list model_enumerated: model-only sites marked for enumeration.
    :ivar list prior_proposed: latent model sites neither in the guide nor enumerated:
        drawn from their prior, which is then their proposal.
    :ivar int max_plate_nesting: how many plates deep the pair's sites go.
    """

    guide_enumerated: list
    model_enumerated: list
    prior_proposed: list
    max_plate_nesting: int

    @property
    def enumerated(self) -> bool:
        return bool(self.guide_enumerated or self.model_enumerated)


def _marked(site) -> bool:
    return site["infer"].get("enumerate") in ("parallel", "sequential")


def inspect_pair(model, guide, args) -> PairInfo:
    """Runs the pair once on ``args`` (the random stream is left where it was) and
    reports its enumerated sites, its plate nesting and its model-only latent sites.

    A model-only site that is neither enumerated nor reparameterized is refused when
    its prior depends on parameters: the prior is its proposal, whose gradient would
    then need a score-function term that no Pyro ELBO adds for a model site.

    :raises ValueError: naming the site, for such a site.
    """
    with poutine.block(), importance.preserve_rng(args):
        guide_trace = poutine.trace(guide).get_trace(*args, **getattr(args, "kwargs", {}))
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **getattr(args, "kwargs", {})
        )
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    guide_enumerated = [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and _marked(site)
    ]
    model_enumerated, prior_proposed = [], []
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name in guide_trace.nodes:
            continue
        if _marked(site):
            model_enumerated.append(name)
            continue
        if not getattr(site["fn"], "has_rsample", False):
            log_prob = site["fn"].log_prob(site["value"])
            if log_prob.requires_grad:
                raise ValueError(
                    f"model site {name!r} is not in the guide, not marked for enumeration and "
                    f"not reparameterizable ({type(site['fn']).__name__}), and its prior has "
                    "parameters: no objective can train them. Sample it in the guide, or mark "
                    "it infer={'enumerate': 'parallel'} (a discrete site)"
                )
        prior_proposed.append(name)
    dims = [
        frame.dim
        for trace in (guide_trace, model_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return PairInfo(guide_enumerated, model_enumerated, prior_proposed, -min(dims) if dims else 0)


class _PriorProposed(Messenger):
    def __init__(self, names):
        super().__init__()
        self.names = frozenset(names)

    def _process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] in self.names and not msg["is_observed"]:
            msg["mask"] = False


def prior_proposed(model, names):
    r"""The model with the log-densities of the latent sites ``names`` masked out: each is
    drawn from its prior, which is its proposal, so :math:`\log p(s) - \log q(s) = 0`.
    Their draws still flow (reparameterized) into every site that depends on them."""
    if not names:
        return model
    handler = _PriorProposed(names)

    def masked(*args, **kwargs):
        with handler:
            return model(*args, **kwargs)

    return masked
