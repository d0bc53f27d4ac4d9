"""One round at a time per home: an atomic lock the kernel releases when its holder dies."""

import os
import signal
import subprocess
import sys
import time

import pytest

from rs_pipeline.home_lock import LOCK_FILE, HomeBusy, busy, holds_lock, home_lock

HOLDER = """
import sys, time
from rs_pipeline.home_lock import home_lock
with home_lock(sys.argv[1], "test holder"):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(home):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_at_once_and_told_who_holds_the_home(tmp_path):
    holder = _hold(tmp_path)
    try:
        start = time.perf_counter()
        with pytest.raises(HomeBusy, match=rf"busy: a round is running there \(pid {holder.pid} "):
            with home_lock(tmp_path, "second"):
                pass
        assert time.perf_counter() - start < 1.0  # refused, not queued forever
        assert f"pid {holder.pid}" in busy(tmp_path)
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_free_again_when_its_holder_is_killed(tmp_path):
    holder = _hold(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert busy(tmp_path) is None
    with home_lock(tmp_path, "after the crash"):
        assert holds_lock(tmp_path)
    assert (tmp_path / LOCK_FILE).exists() and not holds_lock(tmp_path)


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with home_lock(tmp_path, "outer"):
        with home_lock(tmp_path, "inner"):
            assert holds_lock(tmp_path)
        assert holds_lock(tmp_path)  # the inner release keeps the outer hold
        assert busy(tmp_path) is None  # this process may go on
    assert not holds_lock(tmp_path)


TOKEN_HOLDER = """
import sys, time
from rs_pipeline.home_lock import home_lock
with home_lock(sys.argv[1], "launcher", token=sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_step_process_joins_its_runs_hold_and_no_other(tmp_path):
    """The multiprocess/dask executors run a round's steps in other processes: they join the
    launcher's hold when they carry its token, and are refused like anyone else without it."""
    holder = subprocess.Popen([sys.executable, "-c", TOKEN_HOLDER, str(tmp_path), "run-a"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        from rs_pipeline.home_lock import joined, lock_token

        with home_lock(tmp_path, "step of run-a", token="run-a"):
            assert holds_lock(tmp_path) and joined(tmp_path) and lock_token(tmp_path) == "run-a"
        assert not holds_lock(tmp_path)
        with pytest.raises(HomeBusy, match=f"pid {holder.pid}"):
            with home_lock(tmp_path, "step of run-b", token="run-b"):
                pass
        with pytest.raises(HomeBusy):
            with home_lock(tmp_path, "a command"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with home_lock(tmp_path, "next", token="run-b"):  # free again: taken, not joined
        assert not joined(tmp_path) and lock_token(tmp_path) == "run-b"
