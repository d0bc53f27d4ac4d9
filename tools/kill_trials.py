"""Kill -9 trials, as a tester runs them: a demo killed at a random moment, then the same command
once more; the home must equal an uninterrupted run's (every table, record and weight file) with
nothing left running, claimed or half-written.

Run: ``.venv/bin/python tools/kill_trials.py --trials 20`` (tiny settings; each trial takes about
a minute on 2 cores). Ends with ``recovered=<k>/<n> identical=<k>/<n>``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_faults import FAULTY, _assert_clean, _demo_args, _spawn, _tables_and_records  # noqa: E402


def _run(home: Path, config: Path) -> tuple[int, float]:
    start = time.perf_counter()
    proc = _spawn(_demo_args(home, config), home)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        print(out[-2000:])
    return proc.returncode, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rs-kill-trials-"))
    config = work / "run.yaml"
    config.write_text(yaml.safe_dump(FAULTY))
    reference = work / "reference"
    code, duration = _run(reference, config)
    assert code == 0, "the uninterrupted reference run failed"
    expected = _tables_and_records(reference)
    print(f"reference demo: {duration:.0f}s", flush=True)
    rng = random.Random(args.seed)
    recovered = identical = trial = 0
    window = 0.95 * duration
    while trial < args.trials:
        home = work / f"trial{trial:02d}"
        delay = rng.uniform(8.0, window)  # imports take the first seconds
        proc = _spawn(_demo_args(home, config), home)
        time.sleep(delay)
        if proc.poll() is not None:  # it finished first: no kill happened, try an earlier moment
            proc.communicate()
            shutil.rmtree(home, ignore_errors=True)
            window = max(16.0, 0.8 * delay)
            print(f"  (finished before {delay:.0f}s: not a kill trial; retrying earlier)", flush=True)
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        if "\ntotal " in (out or ""):  # its work was done (it was printing or exiting)
            shutil.rmtree(home, ignore_errors=True)
            window = max(16.0, 0.9 * delay)
            print(f"  (its work was done by {delay:.0f}s: not a kill trial; retrying earlier)",
                  flush=True)
            continue
        code, _ = _run(home, config)
        ok = code == 0
        try:
            _assert_clean(home)
        except AssertionError as exc:
            ok = False
            print(f"  not clean: {exc}")
        same = ok and _tables_and_records(home) == expected
        recovered += ok
        identical += same
        print(f"trial {trial:2d}: kill -9 at {delay:5.1f}s -> re-run exit {code}, "
              f"{'identical' if same else 'DIFFERENT'}", flush=True)
        trial += 1
    print(f"recovered={recovered}/{args.trials} identical={identical}/{args.trials} ({work})")


if __name__ == "__main__":
    main()
