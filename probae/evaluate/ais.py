r"""Annealed importance sampling (AIS) of :math:`\log p(x)`, and bidirectional Monte
Carlo (BDMC) to tell how far off it is.

AIS (Neal, 2001) moves C chains per data point through a sequence of densities
that anneal from a start :math:`f_0(z)` (the guide :math:`q(z|x)` or the prior
:math:`p(z)`) to the unnormalized posterior :math:`f_T(z) = p(x, z)` along the
geometric path

.. math:: \log f_t(z) = \log f_0(z) + \beta_t \big(\log p(x, z) - \log f_0(z)\big),
          \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1.

From :math:`z_0 \sim f_0`, each chain accumulates the log-weight

.. math:: \log w = \sum_{t=1}^{T} (\beta_t - \beta_{t-1})
          \big(\log p(x, z_{t-1}) - \log f_0(z_{t-1})\big),
          \qquad z_t \sim \mathcal T_t(\cdot | z_{t-1}),

with :math:`\mathcal T_t` a Markov transition that leaves :math:`f_t` invariant
(Hamiltonian Monte Carlo, or MALA: HMC with one leapfrog step). Then
:math:`\mathbb E[w] = p(x)`, and :math:`\log \frac1C \sum_c w_c` is a stochastic
lower bound on :math:`\log p(x)` that tightens as T grows (Wu et al., 2017).

Run backwards from an exact posterior draw, the same sequence gives an unbiased
estimate of :math:`1/p(x)`, hence a stochastic *upper* bound. On data simulated
from the model the simulation's own z is such a draw, and the two bounds sandwich
the true :math:`\log p(x)` (Grosse et al., 2015): :func:`bdmc` reports both and
their gap for several schedule lengths.

Step sizes are adapted per data point during a warm-up run of separate chains
(towards an acceptance rate of 0.65 for HMC and 0.574 for MALA), recorded as a
function of :math:`\beta`, and then held fixed: every transition of the estimate
itself leaves its :math:`f_t` exactly invariant, so the weights stay unbiased.

Enumerated discrete sites of the model (an enumerated mixture component) are
summed out of :math:`p(x, z)` exactly, as in :mod:`probae.importance`. The guide's
latent sites must be continuous with real support.

**References**

[1] `Annealed Importance Sampling`, Radford M. Neal (Statistics and Computing, 2001)

[2] `On the Quantitative Analysis of Decoder-Based Generative Models`, Yuhuai Wu,
Yuri Burda, Ruslan Salakhutdinov, Roger Grosse (ICLR 2017)

[3] `Sandwiching the marginal likelihood using bidirectional Monte Carlo`, Roger
B. Grosse, Zoubin Ghahramani, Ryan P. Adams (arXiv:1511.02543, 2015)

[4] `MCMC using Hamiltonian dynamics`, Radford M. Neal (Handbook of Markov Chain
Monte Carlo, 2011)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.util import prune_subsample_sites

from .. import _progress, importance
from .._common import as_pair, device_of, positive_int
from ._util import _args, _eval_mode, _per_batch, _setup
from .results import LogLikelihood

__all__ = [
    "AISLogLikelihood",
    "BDMC",
    "ais_log_likelihood",
    "bdmc",
    "sigmoid_schedule",
    "TARGET_ACCEPTANCE",
]

#: the acceptance rate each transition's step size is adapted towards
TARGET_ACCEPTANCE = {"hmc": 0.65, "mala": 0.574}
STARTS = ("guide", "prior")
SCHEDULES = ("sigmoid", "linear")


@dataclass(repr=False)
class AISLogLikelihood(LogLikelihood):
    r"""An AIS estimate of :math:`\log p(x)` per data point (``values``), a
    :class:`~probae.evaluate.LogLikelihood` with the AIS run's own diagnostics.

    :ivar torch.Tensor stderr_per_point: the delta-method standard error of each
        point's estimate over its chains, :math:`\sqrt{(C/\mathrm{ESS} - 1)/(C - 1)}`.
    :ivar torch.Tensor ess: the effective sample size
        :math:`(\sum_c w_c)^2 / \sum_c w_c^2` of each point's final weights
        (between 1 and the number of chains).
    :ivar int steps: intermediate distributions T.
    :ivar str transition: ``"hmc"`` or ``"mala"``.
    :ivar float acceptance: the mean acceptance rate over all transitions.
    """

    stderr_per_point: torch.Tensor | None = None
    ess: torch.Tensor | None = None
    steps: int = 0
    transition: str = "hmc"
    acceptance: float = float("nan")

    def __repr__(self) -> str:
        return (
            f"AISLogLikelihood(mean={self.mean:.4f}, stderr={self.stderr:.4f}, "
            f"points={self.values.numel()}, num_chains={self.num_samples}, steps={self.steps}, "
            f"transition={self.transition!r}, acceptance={self.acceptance:.2f}, "
            f"mean ESS={self.ess.double().mean().item():.1f})"
        )


@dataclass
class BDMC:
    r"""Bidirectional Monte Carlo bounds on simulated data, per schedule length.

    :ivar list steps: the schedule lengths T.
    :ivar list lower: per T, the forward AIS estimate of each point (a stochastic
        lower bound on :math:`\log p(x)`).
    :ivar list upper: per T, the reverse AIS estimate of each point (a stochastic
        upper bound).
    :ivar torch.Tensor x: the simulated data.
    """

    steps: list
    lower: list
    upper: list
    x: torch.Tensor

    @property
    def lower_mean(self) -> list:
        return [v.double().mean().item() for v in self.lower]

    @property
    def upper_mean(self) -> list:
        return [v.double().mean().item() for v in self.upper]

    @property
    def gap(self) -> list:
        """Upper minus lower bound, averaged over points, per schedule length (nats)."""
        return [u - lo for u, lo in zip(self.upper_mean, self.lower_mean, strict=True)]

    def __str__(self) -> str:
        lines = [f"BDMC on {self.x.shape[0]} simulated points (nats per point)"]
        lines.append(f"{'steps':>8} {'lower':>12} {'upper':>12} {'gap':>9}")
        for t, lo, up, g in zip(
            self.steps, self.lower_mean, self.upper_mean, self.gap, strict=True
        ):
            lines.append(f"{t:>8} {lo:>12.4f} {up:>12.4f} {g:>9.4f}")
        return "\n".join(lines)


def sigmoid_schedule(steps: int, delta: float = 4.0, like: torch.Tensor | None = None):
    r"""The sigmoid schedule of Grosse et al. (2015):
    :math:`\tilde\beta_t = \sigma(\delta(2t/T - 1))`, rescaled so that
    :math:`\beta_0 = 0` and :math:`\beta_T = 1`. Returns ``steps + 1`` values."""
    like = torch.zeros((), dtype=torch.float64) if like is None else like
    t = torch.arange(steps + 1, dtype=torch.float64, device=like.device) / steps
    b = torch.sigmoid(delta * (2 * t - 1))
    return ((b - b[0]) / (b[-1] - b[0])).to(like.dtype)


def _schedule(kind, steps, like):
    if kind == "sigmoid":
        return sigmoid_schedule(steps, like=like)
    return torch.linspace(0, 1, steps + 1, dtype=like.dtype, device=like.device)


def _real_support(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


class _Path:
    r"""The geometric path between :math:`f_0` and :math:`p(x, z)` for the points of
    ``args``, with C chains each. States are flat tensors of shape ``(C, N, D)``,
    all latent sites of the guide side by side."""

    def __init__(self, model, guide, args, nesting, num_chains, start, what="AIS"):
        self.model, self.guide, self.args = model, guide, args
        self.nesting, self.num_chains, self.start = nesting, num_chains, start
        n = importance.points(args)
        with poutine.block(), torch.no_grad():
            guide_trace = self._plated(poutine.trace(guide).get_trace)
            model_trace = self._plated(
                poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace
            )
        self.sites = []
        plate = importance.data_plate(
            (prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)), size=n
        )
        for name, site in prune_subsample_sites(guide_trace).nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            fn = site["fn"]
            if fn.support.is_discrete or not _real_support(fn.support):
                raise ValueError(
                    f"{what} needs continuous latents with real support, but guide site "
                    f"{name!r} has support {fn.support}"
                )
            value = site["value"]
            batch_dims = value.dim() - len(fn.event_shape)
            data_dims = [f.dim for f in site["cond_indep_stack"] if f.name == plate]
            if not data_dims or batch_dims + data_dims[0] != 1 or value.shape[0] != num_chains:
                raise ValueError(
                    f"{what} needs every guide site in the data plate pyro.plate({plate!r}) "
                    f"as its outermost plate; site {name!r} has shape {tuple(value.shape)}"
                )
            self.sites.append((name, value.shape[2:]))
        if not self.sites:
            raise ValueError(f"{what} needs a guide with at least one latent sample site")
        for name, site in model_trace.nodes.items():
            if (
                site["type"] == "sample"
                and not site["is_observed"]
                and name not in guide_trace.nodes
                and site["infer"].get("enumerate") != "parallel"
            ):
                raise ValueError(
                    f"{what} needs every latent of the model in the guide or enumerated, but "
                    f"model site {name!r} is neither"
                )
        self.data_sites = {
            name
            for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and site["is_observed"]
        }
        self.sizes = [math.prod(shape) for _, shape in self.sites]
        self.shape = (num_chains, n, sum(self.sizes))

    def _plated(self, get_trace, *extra):
        with pyro.plate(importance.SAMPLE_PLATE, self.num_chains, dim=-(self.nesting + 1)):
            return get_trace(*self.args, *extra)

    def flatten(self, values: dict) -> torch.Tensor:
        c, n, _ = self.shape
        return torch.cat(
            [values[name].expand(c, n, *shape).reshape(c, n, -1) for name, shape in self.sites],
            -1,
        )

    def unflatten(self, z: torch.Tensor) -> dict:
        c, n, _ = self.shape
        parts = z.split(self.sizes, -1)
        return {
            name: p.reshape(c, n, *shape)
            for (name, shape), p in zip(self.sites, parts, strict=True)
        }

    def initial(self) -> torch.Tensor:
        """Draws from :math:`f_0`, shape ``(C, N, D)``."""
        fn = self.guide if self.start == "guide" else self.model
        with poutine.block(), torch.no_grad():
            trace = self._plated(poutine.trace(fn).get_trace)
        return self.flatten({name: trace.nodes[name]["value"] for name, _ in self.sites})

    def densities(self, z: torch.Tensor):
        r""":math:`(\log f_0(z), \log p(x, z))`, each of shape ``(C, N)``."""
        values = self.unflatten(z)
        empty = poutine.Trace()
        first = -(self.nesting + 2)
        with poutine.block():
            model = poutine.enum(
                poutine.condition(self.model, data=values), first_available_dim=first
            )
            model_trace = self._plated(poutine.trace(model).get_trace)
            log_joint = _total(importance.joint_terms(empty, model_trace, self.nesting))
            if self.start == "guide":
                guide = poutine.condition(self.guide, data=values)
                guide_trace = self._plated(poutine.trace(guide).get_trace)
                log_f0 = -_total(importance.joint_terms(guide_trace, empty, self.nesting))
            else:
                prior_trace = model_trace.copy()
                for name in self.data_sites:
                    prior_trace.remove_node(name)
                log_f0 = _total(importance.joint_terms(empty, prior_trace, self.nesting))
        return log_f0, log_joint

    def value_and_grad(self, z: torch.Tensor, beta):
        r""":math:`\log f_\beta(z)`, its gradient in z, and :math:`(\log f_0, \log p(x, z))`."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_f0, log_joint = self.densities(z)
            f = log_f0 + beta * (log_joint - log_f0)
            (grad,) = torch.autograd.grad(f.sum(), z)
        return f.detach(), grad, (log_f0.detach(), log_joint.detach())


def _total(terms):
    free, coupled, scale = terms
    if coupled is not None:
        free = free + scale * coupled.reshape(-1, *coupled.shape[-2:]).logsumexp(0)
    return free


def leapfrog(value_and_grad, z, p, grad, step_size, num_steps: int):
    r"""``num_steps`` leapfrog steps of Hamiltonian dynamics with
    :math:`H(z, p) = -\log f(z) + \frac12 |p|^2` (Neal, 2011):

    .. math:: p \leftarrow p + \tfrac\epsilon2 \nabla \log f(z),\quad
              z \leftarrow z + \epsilon p,\quad
              p \leftarrow p + \tfrac\epsilon2 \nabla \log f(z).

    :param value_and_grad: ``z -> (log f(z), grad, aux)``.
    :param grad: the gradient at ``z``.
    :param step_size: broadcastable against ``z``.
    :returns: ``(z, p, log f(z), grad, aux)`` at the end point.
    """
    p = p + 0.5 * step_size * grad
    for step in range(num_steps):
        z = z + step_size * p
        f, grad, aux = value_and_grad(z)
        p = p + (step_size if step < num_steps - 1 else 0.5 * step_size) * grad
    return z, p, f, grad, aux


def log_accept_prob(f_old, p_old, f_new, p_new) -> torch.Tensor:
    r"""The Metropolis log-acceptance probability of a Hamiltonian proposal,
    :math:`\min(0, H(z, p) - H(z', p'))`; a non-finite proposal is refused."""
    delta = f_new - 0.5 * p_new.pow(2).sum(-1) - f_old + 0.5 * p_old.pow(2).sum(-1)
    delta = torch.nan_to_num(delta, nan=-math.inf, posinf=-math.inf)
    return delta.clamp(max=0.0)


def hmc_transition(path, z, beta, step_size, num_leapfrog: int):
    r"""One HMC transition leaving :math:`f_\beta` invariant, for every chain and point.

    :param torch.Tensor step_size: per data point, shape ``(N,)``; each chain's step
        is this times a uniform draw from [0.8, 1.2].
    :returns: ``(z, aux, log L at the old z, acceptance probability (C, N))`` where
        ``aux = (log f0, log p(x, z))`` at the new state.
    """
    vg = lambda u: path.value_and_grad(u, beta)  # noqa: E731
    f, grad, aux = vg(z)
    log_ratio_old = aux[1] - aux[0]
    p = torch.randn_like(z)
    # A step size jittered by up to 20% per chain, independently of the state (so the
    # transition stays reversible), keeps a fixed trajectory length from resonating
    # with the posterior's scale (HMC's periodicity, Neal 2011, 5.4.2.2).
    jitter = 0.8 + 0.4 * torch.rand_like(z[..., :1])
    eps = step_size.reshape(1, -1, 1) * jitter
    z_new, p_new, f_new, _, aux_new = leapfrog(vg, z, p, grad, eps, num_leapfrog)
    log_a = log_accept_prob(f, p, f_new, p_new)
    accept = torch.rand_like(log_a).log() < log_a
    z = torch.where(accept.unsqueeze(-1), z_new, z)
    aux = tuple(torch.where(accept, new, old) for new, old in zip(aux_new, aux, strict=True))
    return z, aux, log_ratio_old, log_a.exp()


def _adapt(path, betas, z, step_size, target, num_leapfrog, bar, rate=0.5):
    """Runs the chains through ``betas``, adapting the log step size of each point
    towards the target acceptance; returns the step sizes after each transition,
    shape ``(len(betas), N)``."""
    log_eps = step_size.log()
    history = []
    for beta in betas:
        z, _, _, acc = hmc_transition(path, z, beta, log_eps.exp(), num_leapfrog)
        log_eps = log_eps + rate * (acc.mean(0) - target)
        history.append(log_eps.exp())
        bar.update(1)
    return torch.stack(history)


def _run(path, betas, z, step_sizes, num_leapfrog, bar):
    r"""AIS along ``betas`` (increasing for a forward run, decreasing for a reverse
    one) from states ``z`` of :math:`f_{\beta_0}`; returns the log-weights (C, N)
    and the mean acceptance (a tensor)."""
    with torch.no_grad():
        log_f0, log_joint = path.densities(z)
    log_ratio = log_joint - log_f0
    log_w = torch.zeros_like(log_ratio)
    acc_total = log_ratio.new_zeros(())
    for t in range(1, len(betas)):
        log_w = log_w + (betas[t] - betas[t - 1]) * log_ratio
        if t == len(betas) - 1:
            break
        z, aux, _, acc = hmc_transition(path, z, betas[t], step_sizes[t], num_leapfrog)
        log_ratio = aux[1] - aux[0]
        acc_total = acc_total + acc.mean()
        bar.update(1)
    bar.update(1)
    transitions = len(betas) - 2
    return log_w, acc_total / transitions if transitions else acc_total + math.nan


def _step_size_profile(warm_betas, warm_eps, betas):
    """The warm-up's step sizes looked up at each beta of the schedule: (T + 1, N)."""
    index = torch.searchsorted(warm_betas.contiguous(), betas.contiguous()).clamp(
        max=len(warm_betas) - 1
    )
    return warm_eps[index]


def _check_options(num_chains, steps, transition, num_leapfrog, start, schedule, warmup, step_size):
    num_chains = positive_int("num_chains", num_chains)
    num_leapfrog = positive_int("num_leapfrog", num_leapfrog)
    if transition not in TARGET_ACCEPTANCE:
        raise ValueError(f"transition must be one of {list(TARGET_ACCEPTANCE)}, got {transition!r}")
    if transition == "mala":
        num_leapfrog = 1  # MALA is HMC with a single leapfrog step
    if start not in STARTS:
        raise ValueError(f"start must be one of {list(STARTS)}, got {start!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or step_size <= 0:
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    return num_chains, num_leapfrog


def _progress_bar(total, desc, progress):
    return _progress.counter(total, desc, "step", progress)


def _summary(log_w):
    c = log_w.shape[0]
    lse = log_w.logsumexp(0)
    values = lse - math.log(c)
    ess = (2 * lse - (2 * log_w).logsumexp(0)).exp()
    if c > 1:
        stderr = ((c / ess - 1).clamp(min=0) / (c - 1)).sqrt()
    else:
        stderr = torch.full_like(values, float("nan"))
    return values, stderr, ess


def ais_log_likelihood(
    model,
    data,
    num_chains: int = 16,
    steps: int = 1000,
    transition: str = "hmc",
    num_leapfrog: int = 10,
    start: str = "guide",
    schedule: str = "sigmoid",
    warmup: int = 100,
    step_size: float = 0.1,
    batch_size: int = 100,
    c=None,
    progress: bool | None = None,
) -> AISLogLikelihood:
    r"""The AIS estimate of :math:`\log p(x)` for each data point (see the module).

    Also reached as ``evaluate.log_likelihood(model, data, method="ais", ...)``.

    :param model: a probae model or a ``(model, guide)`` pair with continuous latents.
    :param data: a :class:`~probae.data.Dataset` or a tensor of shape ``(N, ...)``.
    :param int num_chains: C, independent chains per point (vectorized).
    :param int steps: T, intermediate distributions from :math:`f_0` to the posterior.
    :param str transition: ``"hmc"`` (``num_leapfrog`` leapfrog steps) or ``"mala"``.
    :param int num_leapfrog: leapfrog steps per HMC transition.
    :param str start: ``"guide"`` (:math:`q(z|x)`) or ``"prior"`` (:math:`p(z)`).
    :param str schedule: ``"sigmoid"`` (Grosse et al., 2015) or ``"linear"`` in beta.
    :param int warmup: transitions of the step-size warm-up run (0: ``step_size`` throughout).
    :param float step_size: the initial leapfrog step size.
    :param int batch_size: points run at once (memory grows with
        ``batch_size * num_chains``).
    :param c: conditions, one row per point, for conditional models.
    :param bool progress: show progress (True or None): a bar in a terminal or a
        notebook, elsewhere a plain line every 10 s; False shows nothing.
    :rtype: AISLogLikelihood
    """
    steps = positive_int("steps", steps)
    num_chains, num_leapfrog = _check_options(
        num_chains, steps, transition, num_leapfrog, start, schedule, warmup, step_size
    )
    pair, x, c, batch_size, nesting = _setup(model, data, c, batch_size, "AIS", start == "guide")
    target = TARGET_ACCEPTANCE[transition]
    n_batches = math.ceil(x.shape[0] / batch_size)
    bar = _progress_bar(n_batches * (warmup + steps), "probae AIS", progress)
    values, stderrs, esss, accs = [], [], [], []
    with torch.no_grad(), _eval_mode(pair.module), bar:
        for args in _per_batch(x, c, batch_size):
            path = _Path(pair.model, pair.guide, args, nesting, num_chains, start)
            eps_profile = _warm_up(path, schedule, warmup, step_size, target, num_leapfrog, bar)
            betas = _schedule(schedule, steps, args[0])
            log_w, acc = _run(path, betas, path.initial(), eps_profile(betas), num_leapfrog, bar)
            v, s, e = _summary(log_w)
            values.append(v), stderrs.append(s), esss.append(e), accs.append(acc)
    return AISLogLikelihood(
        torch.cat(values),
        num_chains,
        stderr_per_point=torch.cat(stderrs),
        ess=torch.cat(esss),
        steps=steps,
        transition=transition,
        acceptance=torch.stack(accs).mean().item(),
    )


def _warm_up(path, schedule, warmup, step_size, target, num_leapfrog, bar):
    """Adapts step sizes on separate chains; returns ``betas -> (len(betas), N)``."""
    n = path.shape[1]
    like = path.args[0]
    initial = like.new_full((n,), float(step_size))
    if warmup == 0:
        return lambda betas: initial.expand(len(betas), n)
    warm_betas = _schedule(schedule, warmup, like)[1:]
    warm_eps = _adapt(path, warm_betas, path.initial(), initial, target, num_leapfrog, bar)
    return lambda betas: _step_size_profile(warm_betas, warm_eps, betas)


def bdmc(
    model,
    num_points: int = 100,
    steps=(100, 1000),
    num_chains: int = 1,
    transition: str = "hmc",
    num_leapfrog: int = 10,
    start: str = "guide",
    schedule: str = "sigmoid",
    warmup: int = 100,
    step_size: float = 0.1,
    batch_size: int = 100,
    x_shape=None,
    c=None,
    device=None,
    dtype=None,
    progress: bool | None = None,
) -> BDMC:
    r"""Bidirectional Monte Carlo (Grosse et al., 2015) on data simulated from the model.

    Draws :math:`(z_n, x_n) \sim p(z)\,p(x|z)` for ``num_points`` points, then for
    each schedule length T runs forward AIS from :math:`f_0` (a stochastic lower
    bound on :math:`\log p(x_n)`) and reverse AIS from the simulation's own
    :math:`z_n`, an exact posterior draw (a stochastic upper bound). The true
    :math:`\log p(x)` lies between them in expectation; the gap shrinks to zero as
    T grows and says how many steps make AIS trustworthy on this model.

    :param model: a probae model or a ``(model, guide)`` pair whose model samples
        the data at a site named ``"x"`` when that site is unconditioned.
    :param int num_points: simulated points.
    :param steps: one schedule length or a list of them.
    :param int num_chains: chains per point, in both directions.
    :param x_shape: the shape of one data point (default: the model's ``x_shape``).
    :param c: conditions, ``num_points`` rows, for conditional models.
    :param int batch_size: points run at once.
    :param device: where to simulate (default: the model's device, else the CPU).
    :param torch.dtype dtype: of the simulated data (default: the model's parameters',
        else torch's default).

    The remaining arguments are those of :func:`ais_log_likelihood`.

    :rtype: BDMC
    """
    num_points = positive_int("num_points", num_points)
    steps_list = [steps] if isinstance(steps, int) else list(steps)
    if not steps_list:
        raise ValueError("steps must be a positive integer or a non-empty list of them")
    steps_list = [positive_int("steps", t) for t in steps_list]
    num_chains, num_leapfrog = _check_options(
        num_chains, steps_list[0], transition, num_leapfrog, start, schedule, warmup, step_size
    )
    pair = as_pair(model)
    x_shape = getattr(pair.module, "x_shape", None) if x_shape is None else x_shape
    if x_shape is None:
        raise ValueError("bdmc needs x_shape= (the shape of one data point) for a user's pair")
    x, z_true = _simulate(pair, num_points, tuple(x_shape), c, device, dtype)
    # Setup checks (guide density, plates) on the simulated data.
    pair, x, c, batch_size, nesting = _setup(model, x, c, batch_size, "BDMC", start == "guide")
    target = TARGET_ACCEPTANCE[transition]
    n_batches = math.ceil(num_points / batch_size)
    total = n_batches * (warmup + 2 * sum(steps_list))
    bar = _progress_bar(total, "probae BDMC", progress)
    lower = [[] for _ in steps_list]
    upper = [[] for _ in steps_list]
    with torch.no_grad(), _eval_mode(pair.module), bar:
        for start_row, args in zip(
            range(0, num_points, batch_size), _per_batch(x, c, batch_size), strict=True
        ):
            rows = slice(start_row, start_row + batch_size)
            path = _Path(pair.model, pair.guide, args, nesting, num_chains, start, "BDMC")
            missing = [name for name, _ in path.sites if name not in z_true]
            if missing:
                raise ValueError(f"BDMC: the model does not sample the guide's sites {missing}")
            exact = path.flatten({name: z_true[name][rows] for name, _ in path.sites})
            eps_profile = _warm_up(path, schedule, warmup, step_size, target, num_leapfrog, bar)
            for i, t in enumerate(steps_list):
                betas = _schedule(schedule, t, args[0])
                eps = eps_profile(betas)
                log_w, _ = _run(path, betas, path.initial(), eps, num_leapfrog, bar)
                lower[i].append(_summary(log_w)[0])
                log_w, _ = _run(path, betas.flip(0), exact, eps.flip(0), num_leapfrog, bar)
                upper[i].append(-_summary(log_w)[0])
    return BDMC(
        steps_list, [torch.cat(v) for v in lower], [torch.cat(v) for v in upper], x.detach()
    )


def _simulate(pair, num_points, x_shape, c, device, dtype):
    """Data and latents drawn from the model, with its observed sites unconditioned."""
    device = device_of(pair.module) if device is None else torch.device(device)
    if dtype is None:
        params = list(pair.module.parameters()) if pair.module is not None else []
        dtype = params[0].dtype if params else torch.get_default_dtype()
    dummy = torch.zeros(num_points, *x_shape, device=device, dtype=dtype)
    if c is not None:
        c = torch.as_tensor(c).to(device)
    with poutine.block(), torch.no_grad(), _eval_mode(pair.module):
        trace = poutine.trace(poutine.uncondition(pair.model)).get_trace(*_args(dummy, c))
    site = trace.nodes.get("x")
    if site is None or site["type"] != "sample":
        raise ValueError("bdmc needs the model to observe the data at a site named 'x'")
    x = site["value"]
    if tuple(x.shape) != (num_points, *x_shape):
        raise ValueError(
            f"bdmc: the model's site 'x' drew shape {tuple(x.shape)}, expected "
            f"{(num_points, *x_shape)}"
        )
    z = {
        name: s["value"] for name, s in trace.nodes.items() if s["type"] == "sample" and name != "x"
    }
    return x, z
