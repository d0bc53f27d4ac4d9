"""One round at a time per home, enforced atomically: an exclusive ``flock`` on
``<home>/.rs_pipeline.lock``.

The kernel releases the lock when its process dies (SIGKILL, out of memory, power loss), so a
crashed run never leaves the home locked, and whoever holds the lock knows that no other run on
this home is alive. The lock is re-entrant within a process (the CLI holds it while the runs it
starts in-process take it again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
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


@contextlib.contextmanager
def home_lock(home: str | Path, purpose: str):
    """Hold the home's lock for the block; raises ``HomeBusy`` at once if another process has it."""
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
                raise HomeBusy(f"{Path(home)} is busy: a round is running there ({_holder(path)})"
                               ) from None
            info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                    "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
            _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                fd = _held.pop(key)[0]
                os.close(fd)  # closing the descriptor releases the flock


def holds_lock(home: str | Path) -> bool:
    """Whether this process holds the home's lock."""
    return str((Path(home) / LOCK_FILE).resolve()) in _held


def busy(home: str | Path) -> str | None:
    """Who holds the home's lock, or None if it is free (checked without keeping it)."""
    try:
        with home_lock(home, "probe"):
            return None
    except HomeBusy as exc:
        return str(exc)
