"""A :mod:`pyro.optim` optimizer driven exactly as :class:`pyro.infer.SVI` drives it.

A :class:`~pyro.optim.PyroOptim` (``pyro.optim.Adam``, ``ClippedAdam``, a
:class:`~pyro.optim.lr_scheduler.PyroLRScheduler`, ...) keeps one PyTorch optimizer
per parameter, created on the parameter's first step, and clips each parameter's
gradient on its own (``clip_norm`` is per parameter, not over all of them).
:class:`PyroOptimizer` calls it as ``SVI.step`` does, after the gradients are in, and
gives :func:`probae.fit` the small interface its loop uses: ``step``, ``zero_grad``,
``add_param_group``, ``param_groups`` (the learning rates), ``state`` and a state dict
for checkpoints.
"""

from __future__ import annotations

from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler
from pyro.optim.optim import _get_state_dict, _load_state_dict

__all__ = ["PyroOptimizer", "is_pyro_optimizer"]


def is_pyro_optimizer(optimizer) -> bool:
    return isinstance(optimizer, PyroOptim)


def _torch_optimizer(optim):
    """The PyTorch optimizer of one parameter (under its scheduler, if any)."""
    return getattr(optim, "optimizer", optim)


class PyroOptimizer:
    """:class:`~pyro.optim.PyroOptim` with the interface of a PyTorch optimizer.

    :param pyro_optim: the Pyro optimizer, as it would be given to ``SVI``.
    :param params: the parameters to optimize.
    """

    def __init__(self, pyro_optim: PyroOptim, params):
        self.pyro_optim = pyro_optim
        self.params = list(params)

    def add_param_group(self, group: dict) -> None:
        self.params.extend(group["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """One step of every parameter's optimizer, as ``SVI.step`` takes it."""
        self.pyro_optim(self.params)

    def end_epoch(self) -> None:
        """Steps a :class:`~pyro.optim.lr_scheduler.PyroLRScheduler` (once per epoch, as
        Pyro's examples step it after each pass over the data)."""
        if isinstance(self.pyro_optim, PyroLRScheduler):
            self.pyro_optim.step()

    def _optimizers(self):
        objs = self.pyro_optim.optim_objs
        return [_torch_optimizer(objs[p]) for p in self.params if p in objs]

    @property
    def param_groups(self) -> list:
        groups = [g for optim in self._optimizers() for g in optim.param_groups]
        return groups or [{"lr": None}]

    @property
    def state(self) -> dict:
        return {p: s for optim in self._optimizers() for p, s in optim.state.items()}

    def state_dict(self) -> dict:
        objs = self.pyro_optim.optim_objs
        return {
            "per_parameter": [_get_state_dict(objs[p]) if p in objs else None for p in self.params]
        }

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("per_parameter") if isinstance(state, dict) else None
        if saved is None or len(saved) != len(self.params):
            raise ValueError("the optimizer state was not saved by the same pyro.optim optimizer")
        for p, entry in zip(self.params, saved, strict=True):
            if entry is None:
                continue
            optim = self.pyro_optim
            if p not in optim.optim_objs:
                optim.optim_objs[p] = optim._get_optim(p)
                optim.grad_clip[p] = optim._get_grad_clip(p)
            _load_state_dict(optim.optim_objs[p], entry)
