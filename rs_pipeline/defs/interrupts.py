"""Ctrl-C that no step loses.

Inside a step's user code Dagster's SIGINT (and SIGTERM) handler raises
``DagsterExecutionInterruptedError`` wherever the signal lands. Python ignores an exception raised
inside a weakref callback or a finalizer (it prints "Exception ignored in ..." and goes on), so a
signal that lands while a garbage collection runs those is lost: the step and then the run carry
on as if no one had pressed Ctrl-C. That happened here: accelerate calls ``gc.collect()`` as a
``Trainer`` starts, SQLAlchemy's weakref callbacks run in it, and a Ctrl-C 0.1 s into the
preference refresh was swallowed there (the round then finished and the CLI exited 0).

``remembered_interrupts()`` wraps the handler in force for the length of a step's work: the
signal is noted first, then handled as before (so it still stops the step at once where it can).
When the block ends with a signal noted but nothing raised, it raises Dagster's interruption
then, after the step's work was recorded (a rerun reuses it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import dagster as dg

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def remembered_interrupts() -> Iterator[None]:
    """Note SIGINT/SIGTERM before handling them as before (Python handlers only); raise Dagster's
    interruption when the block ends if one was noted and none escaped. Off the main thread (a
    dask worker's step), where handlers cannot be set, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    # only Python handlers can be swallowed; default and ignored signals stay as they are
    before = {sig: h for sig in SIGNALS if callable(h := signal.getsignal(sig))}

    def note_then_handle(signo, frame):
        noted.append(signo)
        before[signo](signo, frame)

    for sig in before:
        signal.signal(sig, note_then_handle)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    if noted:  # handled, but whatever it raised was swallowed on the way
        raise dg.DagsterExecutionInterruptedError()
