"""One round at a time per home, enforced atomically: an exclusive ``flock`` on
``<home>/.rs_pipeline.lock``.

The kernel releases the lock when its process dies (SIGKILL, out of memory, power loss), so a
crashed run never leaves the home locked, and whoever holds the lock knows that no other run on
this home is alive. The lock is re-entrant within a process (the CLI holds it while the runs it
starts in-process take it again).

A run whose steps execute in other processes (the multiprocess or dask executor) shares its
lock with them: every holder writes a *token* into the lock file, the launcher passes its token
to the run as a tag, and a step process that finds the lock held under its run's token joins
it instead of failing (``home_lock(..., token=...)``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from rs_pipeline.errors import InputError

LOCK_FILE = ".rs_pipeline.lock"
_held: dict[str, list] = {}  # lock path -> [fd, depth]
_guard = threading.Lock()


class HomeBusy(InputError):
    """Another process is running a round (or bootstrap) on this home."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('purpose')}, since " \
           f"{info.get('since')})"


def _held_under(path: Path, token: str | None) -> bool:
    """Whether the lock on ``path`` is held under ``token`` (by this run's launcher or another of
    its steps). The holder writes its token right after taking the lock: a reader that comes in
    between looks again for a moment before deciding it is someone else's."""
    if not token:
        return False
    for _ in range(40):
        try:
            if json.loads(path.read_text() or "{}").get("token") == token:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def home_lock(home: str | Path, purpose: str, token: str | None = None):
    """Hold the home's lock for the block; raises ``HomeBusy`` at once if another process has it.

    ``token`` names the holder (default: a new one). A process that finds the lock held under
    the same ``token`` joins the holder instead (a step of the run whose launcher holds it);
    the block then runs without taking the lock, and ``joined(home)`` is true inside it."""
    path = Path(home) / LOCK_FILE
    key = str(path.resolve())
    with _guard:
        if key in _held:
            _held[key][1] += 1
            fd = None
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                fd = -1
            if fd == -1 and not _held_under(path, token):
                raise HomeBusy(f"{Path(home)} is busy: a round is running there ({_holder(path)})"
                               ) from None
            if fd != -1:
                info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "token": token or uuid.uuid4().hex}
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(info).encode())
            _held[key] = [fd, 1, info["token"] if fd != -1 else token]
    try:
        yield
    finally:
        with _guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                fd = _held.pop(key)[0]
                if fd != -1:
                    os.close(fd)  # closing the descriptor releases the flock


def _entry(home: str | Path) -> list | None:
    return _held.get(str((Path(home) / LOCK_FILE).resolve()))


def holds_lock(home: str | Path) -> bool:
    """Whether this process holds the home's lock (or has joined its run's holder)."""
    return _entry(home) is not None


def joined(home: str | Path) -> bool:
    """Whether this process runs under another process's hold of the lock (a step of a run
    whose launcher or sibling step holds it)."""
    entry = _entry(home)
    return entry is not None and entry[0] == -1


def lock_token(home: str | Path) -> str | None:
    """The token this process holds the home's lock under (None if it does not hold it)."""
    entry = _entry(home)
    return entry[2] if entry is not None else None


def busy(home: str | Path) -> str | None:
    """Who holds the home's lock, or None if it is free (checked without keeping it)."""
    try:
        with home_lock(home, "probe"):
            return None
    except HomeBusy as exc:
        return str(exc)
