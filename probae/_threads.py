"""How many CPU threads a call of :func:`probae.fit` or an estimator runs PyTorch with.

PyTorch starts with one thread per core. For the small networks autoencoders often are
(a few thousand to a few hundred thousand parameters), each operation is too short to
split: the threads then spend their time waiting for each other, and on a machine where
other work runs, a step that takes a millisecond alone takes ten or more (20 epochs of
the digits VAE: 2.2 s with one thread, 37 s with PyTorch's two, with a second process
busy). ``threads=None`` therefore runs a call on one thread when its work per pass is
small (below :data:`SMALL_WORK` multiply-adds: parameters times rows), and leaves
PyTorch's setting alone otherwise or when the caller has changed it
(``torch.set_num_threads``); an integer sets the count for the call. The caller's
setting is restored when the call returns.
"""

from __future__ import annotations

import contextlib

import torch

from . import _validate

__all__ = ["SMALL_WORK", "for_call"]

#: multiply-adds per pass (parameters x rows) below which one thread is faster
SMALL_WORK = 2**24

#: PyTorch's thread count when probae was imported: a different count later is the caller's
_AT_IMPORT = torch.get_num_threads()


def _parameters(module) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def for_call(threads, module=None, rows: int = 1):
    """A block run with the thread count ``threads`` asks for (see the module).

    :param threads: None (choose), or a positive integer.
    :param module: the model whose parameters measure the work (None: a user's pair of
        functions, whose parameters live in Pyro's store: left to PyTorch's setting).
    :param int rows: rows of data one pass of the networks takes.
    """
    previous = torch.get_num_threads()
    if threads is None:
        small = module is not None and 0 < _parameters(module) * rows < SMALL_WORK
        wanted = 1 if small and previous == _AT_IMPORT else None
    else:
        wanted = _validate.integer("threads", threads, minimum=1)
    if wanted is None or wanted == previous:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
