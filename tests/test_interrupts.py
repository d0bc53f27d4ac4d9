"""A Ctrl-C that lands in a finalizer or weakref callback (a garbage collection inside a step) is
swallowed by Python; ``defs.interrupts.remembered_interrupts`` still stops the step."""

import os
import signal

import dagster as dg
import pytest

from rs_pipeline.defs.interrupts import remembered_interrupts


class _CtrlCInFinalizer:
    """When collected, sends this process SIGINT and keeps running Python code in ``__del__``,
    so the handler runs there: what it raises is printed and dropped ("Exception ignored")."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass


def _raising(signo, frame):  # as Dagster's handler inside a step's user code
    raise dg.DagsterExecutionInterruptedError()


@pytest.fixture
def dagster_handler():
    before = signal.signal(signal.SIGINT, _raising)
    yield
    signal.signal(signal.SIGINT, before)


def test_an_interrupt_swallowed_in_a_finalizer_is_raised_when_the_work_ends(dagster_handler):
    done = []
    _CtrlCInFinalizer()  # collected at once: the interrupt is swallowed, nothing raises
    done.append("without")
    with pytest.raises(dg.DagsterExecutionInterruptedError):
        with remembered_interrupts():
            _CtrlCInFinalizer()
            done.append("with")  # the work goes on to its end, as before ...
    assert done == ["without", "with"]  # ... and then the step stops
    assert signal.getsignal(signal.SIGINT) is _raising  # the handler is given back


def test_an_interrupt_that_raises_is_raised_once_and_a_quiet_block_is_untouched(dagster_handler):
    with pytest.raises(dg.DagsterExecutionInterruptedError):
        with remembered_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    with remembered_interrupts():
        value = sum(range(10))
    assert value == 45 and signal.getsignal(signal.SIGINT) is _raising
