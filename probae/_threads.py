"""How many CPU threads a call of :func:`probae.fit` or an estimator runs PyTorch with.

PyTorch starts with one thread per core. For the small networks autoencoders often are
(a few thousand to a few hundred thousand parameters), each operation is too short to
split: the threads then spend their time waiting for each other, and on a machine where
other work runs, a step that takes a millisecond alone takes ten or more (20 epochs of
the digits VAE: 2.2 s with one thread, 37 s with PyTorch's two, with a second process
busy). The same holds for larger networks whenever other processes keep cores busy:
threads that share a core with another process wait for it at every operation (the
IWAE paper's net on MNIST: 0.31 s per epoch on one thread, 0.87 s on two, with one
core busy). ``threads=None`` therefore runs a call

- on one thread when its work per pass is small (below :data:`SMALL_WORK`
  multiply-adds: parameters times rows);
- otherwise on as many of PyTorch's threads as there are cores not kept busy by
  other processes (the cores less the load, this process's own share of it counted
  back), at least one;

and leaves PyTorch's setting alone when the caller has changed it
(``torch.set_num_threads``). An integer sets the count for the call. The caller's
setting is restored when the call returns.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time

import torch

from . import _validate

__all__ = ["SMALL_WORK", "for_call"]

#: multiply-adds per pass (parameters x rows) below which one thread is faster
SMALL_WORK = 2**24

#: PyTorch's thread count when probae was imported: a different count later is the caller's
_AT_IMPORT = torch.get_num_threads()


def _free_cores() -> int:
    """Cores not kept busy by other processes: the cores less the load (:func:`_load`),
    plus one for this process's own share of it; at least one."""
    cores = os.cpu_count() or 1
    load = _load()
    if load is None:  # no load average on this system
        return cores
    return max(1, min(cores, math.floor(cores - load + 1)))


def _load():
    """The machine's load: on Linux the processes running right now (the median of a
    few reads of /proc/loadavg over a few milliseconds, this process included), which
    follows the machine as it is; elsewhere the one-minute load average, which lags a
    minute behind; None where the system says neither."""
    counts = []
    for _ in range(5):
        try:  # the fourth field of /proc/loadavg is "running/total"
            with open("/proc/loadavg") as handle:
                counts.append(float(handle.read().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            break
        time.sleep(0.001)
    if counts:
        return statistics.median(counts)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


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
        if previous != _AT_IMPORT:
            wanted = None  # the caller's own choice
        else:
            wanted = 1 if small else min(previous, _free_cores())
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
