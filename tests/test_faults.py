"""Crash safety, measured the way a user meets it: ``rs-pipeline demo`` killed with SIGKILL (and
once stopped with Ctrl-C) at random moments inside each model step, then the same command run
again. The home must end with the tables and records of an uninterrupted run, with nothing left
running, claimed or half-written."""

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import mlflow
import pyarrow.parquet as pq
import pytest
import yaml

from rs_pipeline.cli import main
from rs_pipeline.config import merge
from tests.conftest import TINY

# small shards and frequent trainer checkpoints, so kills land between committed pieces of work
FAULTY = merge(TINY, {"recovery": {"shard_prompts": 32, "checkpoint_steps": 10}})
# the round's sampling, preference and evaluation steps (the trainers' resume from their
# checkpoints is tested in test_training/test_lora/test_dpo; tools/kill_trials.py kills at
# random moments across bootstrap and rounds)
KILL_IN = ["generations", "preference_model", "round_eval"]
INTERRUPT_IN = "preference_model"  # this one gets Ctrl-C (SIGINT) instead of SIGKILL


def _demo_args(home: Path, config: Path) -> list[str]:
    return ["demo", "--rounds", "1", "--config", str(config), "--home", str(home)]


# The CLI under test runs in children of a forkserver that imported the heavy libraries once:
# a new interpreter spends ~10 s importing torch, transformers, Dagster and MLflow before the
# command does anything. Each child imports the package itself afresh, reads its settings and
# home as a new process does, and is killed (its whole session) like one.
HEAVY = ["torch", "transformers.modeling_utils", "transformers.trainer", "datasets", "trl",
         "dagster", "mlflow"]


@pytest.fixture(scope="module", autouse=True)
def preloaded_forkserver():
    """This module's forkserver, stopped afterwards: the process has one, and Dagster's
    multiprocess executor (tests/test_scale.py) starts its own with its own preload."""
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(HEAVY)
    yield
    forkserver._forkserver._stop()


def _run_cli(args: list[str], env: dict, log: str) -> None:
    """In the child: a session of its own, the environment given, output to ``log``."""
    os.setsid()
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    code = main(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Cli:
    """An ``rs-pipeline`` command in a forkserver child, read like a ``subprocess.Popen``."""

    def __init__(self, args: list[str], home: Path):
        env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        env.pop("RS_PIPELINE_CONFIG", None)
        self.log = tempfile.NamedTemporaryFile(prefix="cli-", suffix=".log", delete=False).name
        self.proc = multiprocessing.get_context("forkserver").Process(
            target=_run_cli, args=(args, env, self.log))
        self.proc.start()
        self.pid = self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.exitcode

    def poll(self) -> int | None:
        return self.proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            raise subprocess.TimeoutExpired(str(self.pid), timeout)
        return self.proc.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        self.wait(timeout)
        return self.output(), None

    def output(self) -> str:
        return Path(self.log).read_text()


def _spawn(args: list[str], home: Path) -> _Cli:
    return _Cli(args, home)


def _runs(home: Path) -> set[str]:
    """Run ids of the home, from the per-run event-log files (read without opening an
    instance: the process under test may be creating the storage right now)."""
    return {p.stem for p in (home / "history" / "runs").glob("*.db") if p.stem != "index"}


def _step_started(home: Path, step: str, old_runs: set[str]) -> bool:
    for run_id in _runs(home) - old_runs:
        db = home / "history" / "runs" / f"{run_id}.db"
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                # a fanned-out asset's steps are "<asset>.<op>[part]"
                rows = conn.execute("select 1 from event_logs where dagster_event_type = "
                                    "'STEP_START' and (step_key = ? or step_key like ?)",
                                    (step, f"{step}.%_part%")).fetchall()
        except sqlite3.Error:  # not created yet, or being written: look again shortly
            continue
        if rows:
            return True
    return False


def _interrupt_in(home: Path, config: Path, step: str, sig: int, delay: float) -> str:
    """Start the demo, wait until ``step`` starts in one of its runs, wait ``delay`` seconds,
    then send ``sig`` to the whole process group."""
    old_runs = _runs(home)
    proc = _spawn(_demo_args(home, config), home)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if _step_started(home, step, old_runs):
                time.sleep(delay)
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the demo ended before {step} started:\n{proc.output()}"
        os.killpg(proc.pid, sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if sig == signal.SIGINT:
        assert proc.returncode == 130, out
        assert "run the same command again to continue" in out
    else:
        assert proc.returncode == -signal.SIGKILL, out
    return out


def _tables_and_records(home: Path) -> dict[str, object]:
    """Every table, record and checkpoint file under the home's storage, by relative path."""
    out = {}
    root = home / "assets"
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.suffix == ".parquet":
            out[rel] = pq.read_table(path).to_pylist()
        elif path.suffix == ".json":
            out[rel] = json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            out[rel] = path.read_bytes()
    return out


def _assert_clean(home: Path) -> None:
    leftovers = [p for p in home.rglob("*") if p.name.startswith(".tmp-") or p.suffix == ".shards"]
    assert leftovers == []
    assert not any((home / "scratch").iterdir()) if (home / "scratch").exists() else True
    instance = dg.DagsterInstance.from_config(str(home))
    live = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                     dg.DagsterRunStatus.STARTING]))
    assert live == []
    assert instance.event_log_storage.get_concurrency_run_ids() == set()
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rs_pipeline")
    assert client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") == []
    for name in ("rs-policy", "rs-preference"):
        ids = [v.tags["model_id"] for v in client.search_model_versions(f"name = '{name}'")]
        assert len(ids) == len(set(ids)), f"{name}: a checkpoint registered twice"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "run.yaml"
    path.write_text(yaml.safe_dump(FAULTY))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_file) -> Path:
    """The same demo, never interrupted."""
    home = tmp_path_factory.mktemp("reference") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RS_PIPELINE_CONFIG", raising=False)
        assert main(_demo_args(home, config_file)) == 0
    return home


def test_kills_inside_every_model_step_recover_with_one_plain_rerun(reference, config_file,
                                                                    tmp_path, monkeypatch):
    monkeypatch.delenv("RS_PIPELINE_CONFIG", raising=False)
    home = tmp_path / "home"
    rng = random.Random(7)
    for step in KILL_IN:
        sig = signal.SIGINT if step == INTERRUPT_IN else signal.SIGKILL
        _interrupt_in(home, config_file, step, sig, delay=rng.uniform(0.0, 0.4))
    assert main(_demo_args(home, config_file)) == 0  # one plain re-run finishes the demo
    _assert_clean(home)
    ours, theirs = _tables_and_records(home), _tables_and_records(reference)
    assert sorted(ours) == sorted(theirs)
    different = [k for k in ours if ours[k] != theirs[k]]
    assert different == []
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    ref = mlflow.MlflowClient(f"sqlite:///{reference / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("rs-policy", "champion").tags["model_id"]
    assert champion == ref.get_model_version_by_alias("rs-policy", "champion").tags["model_id"]


def test_two_commands_started_at_once_run_one_round(reference, tmp_path):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(reference, home)
    procs = [_spawn(["round", "--home", str(home)], home),
             _spawn(["demo", "--rounds", "1", "--home", str(home), "--config",
                     str(home / "rs_pipeline.yaml")], home)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    busy = next(o for p, o in zip(procs, outs) if p.returncode == 3)
    assert "is busy: a round is running there" in busy
    instance = dg.DagsterInstance.from_config(str(home))
    assert instance.get_dynamic_partitions("rounds") == ["r0001", "r0002"]
