"""Progress wherever a person watches.

In a terminal and in a Jupyter notebook, a tqdm bar (tqdm's automatic front end picks
the notebook widget or the text bar). Where standard error is neither (a log file, a
CI job) a bar's carriage returns make one unreadable line, so progress is written as
plain lines instead, as Lightning's and Keras's loggers do: one a fixed interval
(:data:`EVERY` seconds) apart while work runs, and a last one when it ends. ``False``
silences both.
"""

from __future__ import annotations

import os
import sys
import time

EVERY = 10.0  # seconds between two plain lines while work runs


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")  # never imported here: a script has none loaded
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def check(progress):
    """Returns ``progress``, refusing anything but True, False or None.

    :raises TypeError: naming the argument.
    """
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    return progress


def front_end(progress) -> str | None:
    """How progress is shown: ``"bar"``, ``"lines"`` or None (not at all).

    :param progress: True or None (shown: a bar in a terminal outside CI and in a
        notebook, plain lines elsewhere) or False (not shown).
    :raises TypeError: for anything but True, False or None.
    """
    if check(progress) is False:
        return None
    if _in_notebook():
        return "bar"
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty() and not os.environ.get("CI"):
        return "bar"
    return "lines"


def write(line: str) -> None:
    """Writes one plain progress line to standard error (as it is now, so a
    redirection made after import is honoured)."""
    print(line, file=sys.stderr, flush=True)


def rate(count: float, seconds: float, unit: str) -> str:
    """``"1,234 points/s"``: a throughput for a line (``unit`` singular)."""
    if seconds <= 0:
        return f"- {unit}s/s"
    per_second = count / seconds
    return f"{per_second:,.0f} {unit}s/s" if per_second >= 10 else f"{per_second:.2f} {unit}s/s"


class Lines:
    """A tqdm-like counter (``update``, ``set_postfix``, ``close``, a context manager)
    that writes a plain line every :data:`EVERY` seconds while it counts, and a last
    one on closing when it has written any (a short evaluation stays quiet)."""

    disable = False

    def __init__(self, total, desc: str, unit: str, every: float | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.every = EVERY if every is None else every
        self.n = 0
        self.postfix = {}
        self.began = self.last = time.perf_counter()
        self.written = None  # the count at the last line written

    def set_postfix(self, refresh=True, **values):
        self.postfix = values

    def update(self, n=1):
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self._write(now)

    def _write(self, now):
        self.last, self.written = now, self.n
        postfix = "".join(f", {k} {v}" for k, v in self.postfix.items())
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        write(
            f"{self.desc}: {self.n:,}/{self.total:,} {self.unit}s{percent}{postfix}, "
            f"{now - self.began:.0f} s, {rate(self.n, now - self.began, self.unit)}"
        )

    def close(self):
        if self.written is not None and self.written != self.n and self.last is not None:
            self._write(time.perf_counter())
        self.last = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def counter(total, desc: str, unit: str, progress):
    """A counter over ``total`` units of work shown as ``progress`` asks (see
    :func:`front_end`): a tqdm bar, :class:`Lines`, or a disabled tqdm bar."""
    from tqdm.auto import tqdm

    shown = front_end(progress)
    if shown == "lines":
        return Lines(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=shown is None)
