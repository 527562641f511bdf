r"""Schedules: quantities that :func:`probae.fit` changes step by step.

A schedule is applied at the start of every optimizer step (:meth:`Schedule.apply`),
as a function of the step number alone, so a resumed run continues exactly where
it stopped. Three kinds:

- learning-rate multipliers (:class:`Cosine`, :class:`Step`, :class:`Exponential`,
  :class:`Warmup`, and products of them: ``Warmup(2) * Cosine()``), wrapped in
  :class:`LearningRate`; ``fit(lr_schedule="cosine")`` names one, and
  ``fit(lr_schedule=factory)`` takes a ``torch.optim.lr_scheduler`` factory
  ``optimizer -> scheduler`` instead (stepped once per epoch, as PyTorch's
  schedulers expect);
- :class:`KLWarmup`: beta rising linearly from 0 to the model's beta (Bowman et
  al. 2016); ``fit(beta_warmup=n)`` is ``fit(kl_schedule=KLWarmup(n))``;
- :class:`Capacity`: the controlled-capacity objective of Burgess et al. (2018),

  .. math:: \mathcal L = \mathbb E_q[-\log p(x|z)] + \gamma\,
            \big|\mathrm{KL}(q(z|x)\,\|\,p(z)) - C\big|,

  with :math:`C` rising linearly from 0 to ``max_nats`` over ``steps`` steps and
  the KL in closed form (mean-field), both per data point.

**References**

- Bowman et al. (2016), *Generating Sentences from a Continuous Space*, CoNLL.
- Burgess et al. (2018), *Understanding disentangling in beta-VAE*, arXiv:1804.03599.
- Loshchilov & Hutter (2017), *SGDR: Stochastic Gradient Descent with Warm Restarts*, ICLR.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import Unit
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO

from ._factorized import closed_form_kl

__all__ = [
    "Schedule",
    "Multiplier",
    "Cosine",
    "Step",
    "Exponential",
    "Warmup",
    "LearningRate",
    "KLWarmup",
    "Capacity",
    "named",
    "NAMES",
]


class Schedule:
    """Something set at the start of every step from the step number.

    :meth:`apply` receives the training state (``state.step``: steps done so far,
    ``state.steps_per_epoch``, ``state.total_steps``, ``state.module``,
    ``state.optimizer``).
    """

    def begin(self, state) -> None:
        """Called once before the first step (after a resume, too)."""

    def apply(self, state) -> None:
        """Called before every step: sets what the schedule controls."""
        raise NotImplementedError(f"{type(self).__name__} must define apply(state)")

    def end(self, state) -> None:
        """Called once after the last step."""


# -- learning-rate multipliers ----------------------------------------------------------


class Multiplier:
    """A factor of the base learning rate as a function of the step."""

    def __call__(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} must define __call__(step, ...)")

    def __mul__(self, other: Multiplier) -> Multiplier:
        if not isinstance(other, Multiplier):
            return NotImplemented
        return _Product(self, other)


class _Product(Multiplier):
    def __init__(self, *factors):
        self.factors = factors

    def __call__(self, step, steps_per_epoch, total_steps):
        return math.prod(f(step, steps_per_epoch, total_steps) for f in self.factors)


class Cosine(Multiplier):
    r"""Cosine annealing over the whole run (Loshchilov & Hutter 2017, one cycle):
    :math:`m_t = m_{\min} + (1 - m_{\min})\,\tfrac12(1 + \cos(\pi t / T))`.

    :param float final: :math:`m_{\min}`, the last step's factor.
    """

    def __init__(self, final: float = 0.0):
        self.final = _fraction("final", final)

    def __call__(self, step, steps_per_epoch, total_steps):
        t = min(step / max(total_steps, 1), 1.0)
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t))


class Step(Multiplier):
    """The factor ``gamma`` every ``epochs`` epochs (default: a third of the run).

    :param int epochs: epochs between drops.
    :param float gamma: the factor of one drop.
    """

    def __init__(self, epochs: int | None = None, gamma: float = 0.1):
        self.epochs = epochs
        self.gamma = _fraction("gamma", gamma)

    def __call__(self, step, steps_per_epoch, total_steps):
        total_epochs = max(1, round(total_steps / steps_per_epoch))
        every = self.epochs or max(1, math.ceil(total_epochs / 3))
        return self.gamma ** ((step // steps_per_epoch) // every)


class Exponential(Multiplier):
    """The factor ``gamma`` per epoch, ``gamma ** epoch``.

    :param float gamma: the factor of one epoch.
    """

    def __init__(self, gamma: float = 0.95):
        self.gamma = _fraction("gamma", gamma)

    def __call__(self, step, steps_per_epoch, total_steps):
        return self.gamma ** (step // steps_per_epoch)


class Warmup(Multiplier):
    """A linear rise from ``1/n`` to 1 over the first ``n`` steps of ``epochs`` epochs.

    :param int epochs: epochs of warm-up.
    """

    def __init__(self, epochs: int = 1):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        self.epochs = epochs

    def __call__(self, step, steps_per_epoch, total_steps):
        return min(1.0, (step + 1) / (self.epochs * steps_per_epoch))


def _fraction(name, value):
    if not (isinstance(value, (int, float)) and 0 <= value <= 1):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


NAMES = {
    "cosine": Cosine,
    "step": Step,
    "exponential": Exponential,
    "warmup": Warmup,
    "warmup-cosine": lambda: Warmup(1) * Cosine(),
}


def named(name: str) -> Multiplier:
    """A learning-rate multiplier by name: ``"cosine"``, ``"step"``, ``"exponential"``,
    ``"warmup"`` (one epoch) or ``"warmup-cosine"``."""
    if name not in NAMES:
        raise ValueError(f"unknown lr_schedule={name!r}; expected one of {list(NAMES)}")
    return NAMES[name]()


class LearningRate(Schedule):
    """Sets every parameter group's learning rate to its initial value times a
    :class:`Multiplier` of the step.

    :param Multiplier multiplier: the factor.
    """

    def __init__(self, multiplier: Multiplier):
        if not isinstance(multiplier, Multiplier):
            raise TypeError(
                f"LearningRate needs a schedules.Multiplier, got {type(multiplier).__name__}"
            )
        self.multiplier = multiplier

    def begin(self, state):
        for group in state.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def apply(self, state):
        factor = self.multiplier(state.step, state.steps_per_epoch, state.total_steps)
        for group in state.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # groups added during training
            group["lr"] = group["initial_lr"] * factor


class TorchScheduler(Schedule):
    """A user's ``torch.optim.lr_scheduler`` built by ``factory(optimizer)``, stepped
    once per epoch (after a resume it is stepped through the epochs already done)."""

    def __init__(self, factory):
        self.factory = factory
        self.scheduler = None

    def begin(self, state):
        self.scheduler = self.factory(state.optimizer)
        if not hasattr(self.scheduler, "step"):
            raise TypeError("lr_schedule factory must return a torch.optim.lr_scheduler")
        for _ in range(state.step // state.steps_per_epoch):
            self.scheduler.step()

    def apply(self, state):
        if state.step and state.step % state.steps_per_epoch == 0:
            self.scheduler.step()


def learning_rate(spec) -> Schedule | None:
    """The learning-rate schedule of ``fit(lr_schedule=spec)``."""
    if spec is None or isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        return LearningRate(named(spec))
    if isinstance(spec, Multiplier):
        return LearningRate(spec)
    if callable(spec):
        return TorchScheduler(spec)
    raise TypeError(
        "lr_schedule must be a name, a schedules.Multiplier or a factory "
        f"optimizer -> torch.optim.lr_scheduler, got {type(spec).__name__}"
    )


# -- the KL term -----------------------------------------------------------------------


class KLWarmup(Schedule):
    """beta rising linearly to the model's beta over ``epochs`` epochs (KL annealing,
    Bowman et al. 2016); the model's beta is put back at the end.

    :param int epochs: epochs of warm-up.
    """

    def __init__(self, epochs: int):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        self.epochs = epochs
        self.target = None

    def begin(self, state):
        if state.module is None or not hasattr(state.module, "beta"):
            raise ValueError("KL warm-up needs a model with a beta attribute (a probae model)")
        if self.target is None:
            self.target = state.module.beta

    def apply(self, state):
        warmup_steps = self.epochs * state.steps_per_epoch
        state.module.beta = self.target * min(1.0, (state.step + 1) / warmup_steps)

    def end(self, state):
        if self.target is not None:
            state.module.beta = self.target


class Capacity(Schedule):
    r"""The controlled-capacity objective of Burgess et al. (2018): per data point

    .. math:: -\log p(x|z) + \gamma\,|\mathrm{KL}(q(z|x)\,\|\,p(z)) - C_t|,
              \qquad C_t = C_{\max} \min(1, t / T),

    with the KL in closed form where one exists (as ``TraceMeanField_ELBO``), one
    reparameterized draw of z for the distortion, and the mean KL of the batch
    inside the absolute value (as the paper's implementation). ``pyro.factor``
    sites count as they do in the ELBO.

    Given to ``fit(kl_schedule=...)`` it replaces the loss; :meth:`differentiable_loss`
    evaluates it for any step.

    :param float max_nats: :math:`C_{\max}`, the final capacity in nats.
    :param int steps: :math:`T`, the steps over which C rises.
    :param float gamma: :math:`\gamma`, the weight of the capacity term.
    """

    def __init__(self, max_nats: float, steps: int, gamma: float = 1000.0):
        if not (isinstance(max_nats, (int, float)) and max_nats >= 0):
            raise ValueError(f"max_nats must be a non-negative number, got {max_nats!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not (isinstance(gamma, (int, float)) and gamma > 0):
            raise ValueError(f"gamma must be a positive number, got {gamma!r}")
        self.max_nats, self.steps, self.gamma = float(max_nats), steps, float(gamma)
        self.step = 0
        self.elbo = TraceMeanField_ELBO()
        self.num_particles = 1

    def capacity(self, step: int | None = None) -> float:
        """:math:`C_t` at ``step`` (default: the current step)."""
        step = self.step if step is None else step
        return self.max_nats * min(1.0, step / self.steps)

    def apply(self, state):
        self.step = state.step

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The objective summed over the batch: distortion plus
        :math:`N\\gamma|\\overline{\\mathrm{KL}} - C_t|` for N points."""
        loss = 0.0
        for model_trace, guide_trace in self.elbo._get_traces(model, guide, args, kwargs):
            distortion, kl, n = 0.0, 0.0, None
            for name, site in model_trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if site["is_observed"]:
                    distortion = distortion - site["log_prob_sum"]
                    if n is None and not isinstance(site["fn"], Unit):
                        n = _plate_size(site)
                    continue
                guide_site = guide_trace.nodes[name]
                site_kl = closed_form_kl(guide_site["fn"], site["fn"])
                if site_kl is None:
                    site_kl = guide_site["log_prob_sum"] - site["log_prob_sum"]
                else:
                    site_kl = scale_and_mask(
                        site_kl, scale=guide_site["scale"], mask=guide_site["mask"]
                    ).sum()
                kl = kl + site_kl
            for name, site in guide_trace.nodes.items():
                if site["type"] == "sample" and name not in model_trace.nodes:
                    distortion = distortion + site["log_prob_sum"]
            n = n or 1
            loss = loss + distortion + n * self.gamma * (kl / n - self.capacity()).abs()
        return loss


def _plate_size(site) -> int:
    for frame in site["cond_indep_stack"]:
        if frame.name == "data":
            return frame.size
    shape = site["fn"].batch_shape
    return shape[0] if len(shape) else 1
