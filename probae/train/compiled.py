"""The compiled step of :func:`probae.fit`: the pair's networks run through
:func:`torch.compile` for the length of the fit.

Pyro's trace (the messengers that record each ``pyro.sample``) is Python that changes
with every call, so the whole loss does not compile into one graph. The networks do:
they hold nearly all of a step's arithmetic, and a network's forward pass is a pure
function of its inputs and weights. Each network is compiled whole
(``fullgraph=True``): a network that would break into pieces, recompile past torch's
limit, or give a loss other than the eager one on the first batch is refused in one
sentence, never run eagerly in silence.
"""

from __future__ import annotations

import contextlib
import math

from torch import nn

__all__ = ["CompileError", "Compiled", "check_compile", "compiled", "explained", "networks"]

#: relative difference between the compiled and the eager first-batch loss taken as
#: float rounding (fused kernels sum in another order, and libm's tanh/exp differ
#: from the vectorized ones in the last bits)
RTOL = 1e-4


#: versions of a network's code torch may hold within a compiled fit (torch's default is
#: 8 per process, which a notebook that fits its ninth architecture would reach); past
#: it the fit is refused, not run eagerly
RECOMPILE_LIMIT = 64


class CompileError(ValueError):
    """A network of the pair does not compile into one exact graph."""


def check_compile(compile) -> dict | None:
    """The options ``fit(compile=...)`` passes to :func:`torch.compile`.

    :param compile: ``False``/``None`` (eager), ``True`` (torch's default backend,
        Inductor), a backend name such as ``"aot_eager"``, or a dict of
        :func:`torch.compile` keyword arguments (``backend``, ``mode``, ``dynamic``,
        ``options``).
    :returns: the keyword arguments, or ``None`` for the eager step.
    """
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if isinstance(compile, str):
        return {"backend": compile}
    if isinstance(compile, dict):
        allowed = {"backend", "mode", "dynamic", "options"}
        unknown = sorted(set(compile) - allowed)
        if unknown:
            raise ValueError(
                f"compile got unknown torch.compile options {unknown}; allowed: {sorted(allowed)}"
            )
        return dict(compile)
    raise TypeError(
        "compile must be True/False, a torch.compile backend name or a dict of "
        f"torch.compile options, got {type(compile).__name__}"
    )


def _own_forward(module: nn.Module) -> bool:
    forward = type(module).forward
    return forward is not nn.Module.forward and not isinstance(
        module, (nn.ModuleList, nn.ModuleDict)
    )


def networks(module: nn.Module) -> list:
    """The networks of ``module`` that ``compile`` applies to: the outermost submodules
    with a forward pass of their own and parameters to train (an encoder, a decoder, a
    prior's network), each named by its path.

    :returns: a list of ``(name, submodule)``.
    """
    found = []

    def walk(prefix, parent):
        for name, child in parent.named_children():
            path = f"{prefix}{name}"
            if not any(p.requires_grad for p in child.parameters()):
                continue
            if _own_forward(child):
                found.append((path, child))
            else:
                walk(path + ".", child)

    walk("", module)
    return found


class Compiled:
    """The networks compiled for a fit, by name, with what the set-up and the steps
    need: the eager networks for one comparison, and torch.compile's errors in words."""

    def __init__(self, nets):
        self.nets = nets
        self.names = [name for name, _ in nets]

    @contextlib.contextmanager
    def eager(self):
        """The networks run eagerly within the block."""
        compiled = [net._compiled_call_impl for _, net in self.nets]
        for _, net in self.nets:
            net._compiled_call_impl = None
        try:
            yield
        finally:
            for (_, net), impl in zip(self.nets, compiled, strict=True):
                net._compiled_call_impl = impl

    def compare(self, eager_loss, compiled_loss) -> None:
        """Refuse a compiled step whose first-batch loss is not the eager one to rounding
        (a network that draws random numbers, such as dropout, draws others when
        compiled by Inductor).

        :raises CompileError: naming the networks and both losses.
        """
        e, c = float(eager_loss), float(compiled_loss)
        if not (math.isfinite(c) and abs(c - e) <= RTOL * max(1.0, abs(e))):
            raise CompileError(
                f"compile: the compiled networks {self.names} give a first-batch loss of "
                f"{c!r} where the eager ones give {e!r}, more than float rounding apart (a "
                "network that draws random numbers, such as dropout, cannot compile "
                "exactly); train with compile=False"
            )

    @contextlib.contextmanager
    def explained(self):
        """torch.compile's errors within the block become one :class:`CompileError`."""
        try:
            yield
        except Exception as error:
            cause = _compiler_error(error)
            if cause is None:
                raise
            first = next(iter(str(cause).strip().splitlines()), "") or type(cause).__name__
            raise CompileError(
                f"compile: the networks {self.names} do not compile into one graph "
                f"({type(cause).__name__}: {first}); train with compile=False"
            ) from error


def _compiler_error(error):
    """The error torch.compile raised in ``error``'s chain (Pyro's trace raises its
    own error from it), or None. With ``fullgraph=True`` torch refuses, rather than runs
    eagerly, a call it traced nothing of (a tensor type TorchDynamo does not trace)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
            return error
        if isinstance(error, RuntimeError) and str(error).startswith("torch.compile"):
            return error  # torch's own refusal, such as "found no compiled frames"
        error = error.__cause__ or error.__context__
    return None


def explained(held: Compiled | None):
    """``held.explained()``, or nothing to explain for the eager step."""
    return contextlib.nullcontext() if held is None else held.explained()


@contextlib.contextmanager
def compiled(module, options: dict | None):
    """Compile the networks of ``module`` (:func:`networks`) for the length of the block
    and give back the eager ones at its end, even when it raises; the weights and the
    ``state_dict`` keys are the module's own throughout.

    :param options: from :func:`check_compile`; ``None`` leaves the module eager.
    :returns: (as the block's value) a :class:`Compiled`, or None for the eager step.
    """
    if options is None:
        yield None
        return
    if not isinstance(module, nn.Module):
        raise CompileError(
            "compile needs the networks as submodules of one torch.nn.Module (a probae "
            "model, or a pair of methods of one module); this pair has none"
        )
    nets = networks(module)
    if not nets:
        raise CompileError(
            "compile=True found no network to compile in the model: no submodule with "
            "a forward pass and trainable parameters"
        )
    import torch._dynamo

    held, before = Compiled(nets), [net._compiled_call_impl for _, net in nets]
    try:
        limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, recompile_limit=limit):
            for _, net in nets:
                net.compile(fullgraph=True, **options)
            yield held
    finally:
        for (_, net), impl in zip(nets, before, strict=True):
            net._compiled_call_impl = impl
