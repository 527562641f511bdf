"""Run directories owned by one writer at a time.

A training run (``probae.fit(checkpoint_dir=...)``, ``probae train``) holds an
advisory lock on its folder while it writes there: the file ``.lock`` in the folder,
locked with :func:`fcntl.flock` and holding the owner's process id and host name. A
second writer is refused with an error naming the owner. The owner removes the file
when it is done, error or not. The operating system releases the lock when its owner
exits, however it exits (a ``kill -9`` included), so a lock left by a dead process is
stale and is taken over; the file's contents then still name the dead process, which
:func:`holder` reports for the record.

Locks are re-entrant within one process: ``probae train`` takes the lock before it
writes ``config.json`` and :func:`probae.fit` takes it again around its checkpoints.

Example::

    with rundir.lock("runs/my-run"):
        ...  # no other probae process writes here meanwhile
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; O_EXCL below stands in
    fcntl = None

__all__ = ["LOCK_NAME", "RunDirectoryLocked", "holder", "lock"]

LOCK_NAME = ".lock"

_held: dict = {}  # real path of a folder -> [file descriptor, depth]
_guard = threading.Lock()


class RunDirectoryLocked(RuntimeError):
    """Another live process writes the run directory."""

    def __init__(self, folder: Path, owner: dict | None):
        pid = (owner or {}).get("pid", "unknown")
        host = (owner or {}).get("host", "unknown host")
        super().__init__(
            f"run directory {str(folder)!r} is in use by process {pid} on {host} (its lock "
            f"is {str(folder / LOCK_NAME)!r}); wait for that run to end or stop it, or choose "
            "another folder"
        )
        self.folder = folder
        self.pid = owner.get("pid") if owner else None


def holder(folder) -> dict | None:
    """The ``{"pid", "host"}`` recorded in a folder's lock file (its current or last
    owner), or None if there is none."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text()
        owner = json.loads(text)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _written_holder(folder, wait: float = 2.0) -> dict | None:
    """The holder of a lock just found taken. Its owner writes its record right after
    taking the lock, so a reader that came a moment too soon waits briefly for it."""
    deadline = time.monotonic() + wait
    while True:
        owner = holder(folder)
        if owner is not None or time.monotonic() > deadline:
            return owner
        time.sleep(0.02)


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _owner_record() -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()


def _acquire(folder: Path) -> int:
    path = folder / LOCK_NAME
    if fcntl is None:
        return _acquire_exclusive(folder, path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirectoryLocked(folder, _written_holder(folder)) from None
        except OSError:  # a file system without flock: fall back to O_EXCL
            os.close(fd)
            return _acquire_exclusive(folder, path)
        # The owner before us removes the file before it lets go of it: if the file
        # locked is no longer the one at the path, take the lock again on the new one.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, _owner_record(), 0)
    os.fsync(fd)
    return fd


def _acquire_exclusive(folder: Path, path: Path) -> int:
    """A lock file created with O_EXCL; a file naming a dead process on this host is
    stale and is replaced."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = holder(folder)
            same_host = owner is not None and owner.get("host") == socket.gethostname()
            if same_host and not _pid_alive(owner.get("pid")):
                path.unlink(missing_ok=True)
                continue
            raise RunDirectoryLocked(folder, owner) from None
        os.write(fd, _owner_record())
        os.fsync(fd)
        return -fd - 1  # marks a lock to remove on release
    raise RunDirectoryLocked(folder, holder(folder))


def _release(folder: Path, fd: int) -> None:
    if fd < 0:
        with contextlib.suppress(OSError):
            (folder / LOCK_NAME).unlink()
        os.close(-fd - 1)
        return
    # Removed while still held: a writer that opened it meanwhile finds, once it holds
    # it, that the path no longer names it, and starts over (see _acquire).
    with contextlib.suppress(OSError):
        (folder / LOCK_NAME).unlink()
    os.close(fd)


@contextlib.contextmanager
def lock(folder, create: bool = True):
    """Holds the advisory lock of the run directory ``folder`` (made if ``create``).

    :raises RunDirectoryLocked: if another live process holds it, naming that process.
    :raises OSError: if the folder cannot be made or written.
    """
    folder = Path(folder)
    created = create and not folder.exists()
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            _held[key] = [_acquire(folder), 1]
    try:
        yield folder
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                _release(folder, entry[0])
                if created:  # a command that failed before writing leaves no folder behind
                    _remove_if_unused(folder)


def _remove_if_unused(folder: Path) -> None:
    with contextlib.suppress(OSError):
        if [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()
        folder.rmdir()
