"""Past one process: a round's sampling and scoring fanned out into parts (``defs.fanout``) on
the in-process, multiprocess and dask executors, with rows identical to the unsharded run;
the ``model_work`` pool bounding model steps; the cluster examples valid against the
executors' own schemas."""

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import yaml

from rs_pipeline.defs.runner import _execute_round, failure_messages
from rs_pipeline.home_lock import home_lock
from rs_pipeline.storage import AssetStore
from tests.conftest import pointing_at

ROOT = Path(__file__).resolve().parent.parent
KEY = "r0001"
TABLES = ("generations", "scores")


def _set(home: Path, scale: dict, pool_limit: int = 1) -> None:
    cfg = yaml.safe_load((home / "rs_pipeline.yaml").read_text())
    cfg["scale"] = scale
    (home / "rs_pipeline.yaml").write_text(yaml.safe_dump(cfg))
    (home / "dagster.yaml").write_text(f"telemetry:\n  enabled: false\nconcurrency:\n  pools:\n"
                                       f"    default_limit: {pool_limit}\n")


def _redo(home: Path, assets=TABLES, **scale_and_pool):
    """Re-materialize round 1's ``assets`` (forced; ``()``: ``policy_checkpoint``) with these
    ``scale`` settings, holding the home lock as the CLI does; returns (instance, run id,
    tables)."""
    pool = scale_and_pool.pop("pool_limit", 1)
    _set(home, scale_and_pool, pool)
    with pointing_at(home):
        instance = dg.DagsterInstance.get()
        with home_lock(home, "test"):
            result = _execute_round(instance, KEY, {"rs_pipeline/force": "true"}, True,
                                    asset_selection=[dg.AssetKey(a) for a in
                                                     assets or ("policy_checkpoint",)])
        assert result.success, failure_messages(instance, result)
        store = AssetStore(str(home / "assets"))
        return instance, result.run_id, {a: store.read_table(a, KEY) for a in assets}


def _spans(instance, run_id: str) -> dict[str, tuple[float, float, int]]:
    """(start, end, pid) of every part step of a run."""
    starts, spans = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or "_part_s" not in (event.step_key or ""):
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = (record.timestamp, event.pid)
        elif event.event_type_value == "STEP_SUCCESS":
            spans[event.step_key] = (starts[event.step_key][0], record.timestamp,
                                     starts[event.step_key][1])
    return spans


def _overlap(spans, asset: str) -> bool:
    mine = sorted(v[:2] for k, v in spans.items() if k.startswith(f"{asset}."))
    return any(b[0] < a[1] for a, b in zip(mine, mine[1:]))


def _blocked(instance, run_id: str) -> set[str]:
    """Steps the instance's concurrency pools held back (Dagster's own engine event)."""
    return {r.dagster_event.step_key for r in instance.all_logs(run_id)
            if r.dagster_event is not None and r.dagster_event.step_key
            and r.dagster_event.message
            and r.dagster_event.message.startswith("Step blocked by limit for pool")}


@pytest.fixture(scope="module")
def sharded(two_promoted_rounds, tmp_path_factory):
    """A copy of the two-round home with shards of 16 prompts (6 per round), and round 1's
    tables redone unsharded in process as the reference."""
    home = tmp_path_factory.mktemp("scale") / "home"
    shutil.copytree(two_promoted_rounds[0], home)
    cfg = yaml.safe_load((home / "rs_pipeline.yaml").read_text())
    cfg["recovery"] = {"shard_prompts": 16}
    (home / "rs_pipeline.yaml").write_text(yaml.safe_dump(cfg))
    before = {a: AssetStore(str(home / "assets")).read_table(a, KEY) for a in TABLES}
    _, _, reference = _redo(home, shards=1)
    # the shard size changes no sample; like a batch size it can move a reward by float noise
    assert before["generations"].equals(reference["generations"])
    ours, theirs = (t.column("reward").to_numpy() for t in (reference["scores"], before["scores"]))
    assert abs(ours - theirs).max() < 1e-6
    return home, reference


def _equal(tables: dict[str, pa.Table], reference: dict[str, pa.Table]) -> None:
    for name, table in tables.items():
        assert table.num_rows == reference[name].num_rows > 0
        assert table.equals(reference[name]), name


def test_parts_in_process_write_the_unsharded_rows(sharded):
    home, reference = sharded
    instance, run_id, tables = _redo(home, shards=3)
    _equal(tables, reference)
    spans = _spans(instance, run_id)
    assert sorted(spans) == [f"{a}.{a}_part_s{i}" for a in TABLES for i in range(3)]
    meta = instance.get_latest_materialization_event(dg.AssetKey("generations"))
    assert meta.asset_materialization.metadata["scale/parts"].value == 3
    timed = [r.dagster_event.step_output_data.metadata for r in instance.all_logs(run_id)
             if r.dagster_event is not None and r.dagster_event.event_type_value == "STEP_OUTPUT"
             and "_part_s" in r.dagster_event.step_key]
    assert len(timed) == 6
    assert all(m["cpu_seconds"].value > 0 and m["seconds"].value > 0 for m in timed)
    assert not list((home / "assets" / "generations").glob("*.shards"))  # merged and cleared


@pytest.mark.slow
def test_multiprocess_steps_are_bounded_by_the_model_work_pool(sharded):
    """Two step processes may run at once; the pool decides whether two model steps do. (Parts
    of a tiny round take ~0.4 s: whether two *allowed* steps happen to overlap is the machine's
    timing, so the pool's own decisions are asserted, not the overlap.)"""
    home, reference = sharded
    instance, run_id, tables = _redo(home, ("generations",), shards=2,
                                     executor="multiprocess", workers=2, pool_limit=1)
    _equal(tables, reference)
    one = _spans(instance, run_id)
    assert not _overlap(one, "generations")
    assert _blocked(instance, run_id) & set(one)  # the second part waited for the first's slot
    assert all(pid != os.getpid() for *_, pid in one.values())  # in step processes
    instance, run_id, tables = _redo(home, ("generations",), shards=2,
                                     executor="multiprocess", workers=2, pool_limit=2)
    _equal(tables, reference)
    assert not _blocked(instance, run_id)  # two slots: neither part waited


def _kill_first_part(instance, stop, killed: list) -> None:
    """SIGKILL the step process of the first part that starts in a run begun after this call."""
    earlier = {run.run_id for run in instance.get_runs()}
    while not stop.is_set():
        for run in instance.get_runs(limit=1):
            for record in instance.all_logs(run.run_id) if run.run_id not in earlier else ():
                event = record.dagster_event
                if (event and "_part_s" in (event.step_key or "")
                        and event.event_type_value == "STEP_START"):
                    assert event.pid != os.getpid()
                    os.kill(event.pid, signal.SIGKILL)
                    killed.append(event.step_key)
                    return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_sharded_round_on_a_dask_local_cluster_survives_a_killed_worker(sharded):
    """Steps on a real LocalCluster of two worker processes. With the ``model_work`` pool at 1
    the second part waits for the first's slot; SIGKILL the worker running the first: the run
    fails that step, which ran once (not again on the other worker). The plain rerun (pool at 2)
    puts each ready part on a free worker (both work, none waits) and writes the in-process
    rows."""
    pytest.importorskip("distributed")
    home, reference = sharded
    _set(home, {"shards": 2, "executor": "dask", "workers": 2, "torch_threads": 1}, 1)
    killed = []
    with pointing_at(home):
        instance = dg.DagsterInstance.get()
        stop = threading.Event()
        watcher = threading.Thread(target=_kill_first_part, args=(instance, stop, killed))
        watcher.start()
        try:
            with home_lock(home, "test"):
                result = _execute_round(instance, KEY, {"rs_pipeline/force": "true"}, True,
                                        asset_selection=[dg.AssetKey("generations")])
        finally:
            stop.set()
            watcher.join()
        assert killed and not result.success
        events = [r.dagster_event for r in instance.all_logs(result.run_id) if r.dagster_event]
        assert [e.step_key for e in events if e.event_type_value == "STEP_START"
                and e.step_key == killed[0]] == killed  # it ran once, on the killed worker
        assert [e.step_key for e in events if e.event_type_value == "STEP_FAILURE"] == killed
        assert _blocked(instance, result.run_id) - set(killed)  # the other part waited its turn
    instance, run_id, tables = _redo(home, shards=2, executor="dask", workers=2,
                                     torch_threads=1, pool_limit=2)
    _equal(tables, reference)
    spans = _spans(instance, run_id)
    assert sorted(spans) == [f"{a}.{a}_part_s{i}" for a in TABLES for i in range(2)]
    for asset in TABLES:  # the two parts of each asset on the cluster's two workers
        pids = {pid for k, (*_, pid) in spans.items() if k.startswith(f"{asset}.")}
        assert os.getpid() not in pids and len(pids) == 2, (asset, spans)
    assert not _blocked(instance, run_id)  # and the killed step's slot was given back


def test_an_unreachable_dask_scheduler_is_named_by_its_setting():
    pytest.importorskip("distributed")
    import dask

    from rs_pipeline.defs.dask_steps import DaskStepExecutor
    from rs_pipeline.errors import InputError

    executor = DaskStepExecutor("tcp://127.0.0.1:9", 1, [])  # port 9: nothing listens
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(InputError, match=r"scale.dask_address.*tcp://127.0.0.1:9"):
            with executor._client():
                pass


def _validate(definitions_file: Path, run_config_file: Path) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location(definitions_file.stem, definitions_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    job = module.defs.resolve_job_def("round")
    return dg.validate_run_config(job, yaml.safe_load(run_config_file.read_text()))["execution"]


@pytest.mark.parametrize("cluster", ["k8s", "celery"])
def test_cluster_examples_are_valid_run_config_of_their_executors(cluster):
    pytest.importorskip(f"dagster_{cluster}")
    folder = ROOT / "examples" / cluster
    config = _validate(folder / "definitions.py", folder / "run_config.yaml")[cluster]
    shipped = yaml.safe_load((folder / "run_config.yaml").read_text())["execution"]["config"]
    assert set(shipped) <= set(config)  # every setting shipped is the executor's own
    bad = yaml.safe_load((folder / "run_config.yaml").read_text())
    bad["execution"]["config"]["no_such_setting"] = 1
    (tmp := folder.parent.parent / "test-artifacts").mkdir(exist_ok=True)
    (tmp / f"{cluster}_bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(dg.DagsterInvalidConfigError, match="no_such_setting"):
        _validate(folder / "definitions.py", tmp / f"{cluster}_bad.yaml")


def test_scale_settings_are_checked_and_change_no_step_key(tmp_path):
    from rs_pipeline.config import config_from_dict
    from rs_pipeline.context import scale_problems
    from rs_pipeline.errors import InputError
    from rs_pipeline.resume import step_key

    with pytest.raises(InputError, match="scale.executor"):
        config_from_dict({"scale": {"executor": "ray"}})
    with pytest.raises(InputError, match="scale.shards"):
        config_from_dict({"scale": {"shards": 0}})
    cfg = config_from_dict({"scale": {"dask_address": "tcp://127.0.0.1:8786"}})
    assert "scale.dask_address" in scale_problems(cfg.scale)[0]
    inputs = {"prompts": "v1", "policy": "pol-1"}
    sharded = config_from_dict({"scale": {"shards": 4, "executor": "dask"}})
    assert step_key(cfg, "generations", KEY, inputs) == step_key(sharded, "generations", KEY,
                                                                   inputs)


@pytest.mark.slow
def test_training_by_accelerate_under_pipes_is_the_in_process_candidate(sharded):
    """``scale.training_launcher: accelerate``: the candidate trained by ``accelerate launch``
    in another process, reported back through Dagster Pipes, is the in-process one, byte for
    byte (same content id), and the asset's lineage is unchanged."""
    home, _ = sharded
    store = AssetStore(str(home / "assets"))
    before = store.read_record("policy_checkpoint", KEY)
    instance, run_id, _ = _redo(home, (), training_launcher="accelerate")  # no table to read
    after = store.read_record("policy_checkpoint", KEY)
    assert after.id == before.id and after.parent_id == before.parent_id
    assert after.sft_dataset_version == before.sft_dataset_version
    logs = [r.user_message for r in instance.all_logs(run_id)]
    assert any("trained " + before.id in m for m in logs)  # the Pipes process's own log line


def test_a_process_that_changes_scale_reconstructs_the_new_fan_out():
    """Dagster keeps the last job it reconstructed per pointer for a process's life: the scale
    settings travel in the pointer, so a changed ``scale.shards`` is never planned with the old
    parts (the step processes rebuild the same job from the same pointer)."""
    from rs_pipeline.config import ScaleConfig
    from rs_pipeline.defs import reconstructable_round

    def parts(scale):
        job = reconstructable_round(scale).get_definition()
        return sorted(n for n in job.graph.node_dict["generations"].definition.node_dict
                      if "_part_s" in n), job.executor_def.name

    assert parts(ScaleConfig()) == (["generations_part_s0"], "in_process")
    assert parts(ScaleConfig(shards=2, executor="multiprocess")) == (
        ["generations_part_s0", "generations_part_s1"], "multiprocess")


def test_step_workers_preload_the_package_and_warm_an_existing_store_only(tmp_path):
    """Dask workers and the forkserver import ``defs.worker_preload`` before their first step;
    its dask hook opens the home's MLflow store when there is one and never creates one."""
    from rs_pipeline.config import ScaleConfig
    from rs_pipeline.defs import worker_preload
    from rs_pipeline.defs.executors import PRELOAD, executor_config

    forkserver = executor_config(ScaleConfig(executor="multiprocess"))["start_method"]
    assert forkserver["forkserver"]["preload_modules"] == [PRELOAD]
    assert executor_config(ScaleConfig(executor="dask"))["preload"] == [PRELOAD]
    home = tmp_path / "home"
    home.mkdir()
    with pointing_at(home):
        worker_preload.dask_setup()
    assert not (home / "mlflow.db").exists()


_FAULTS = """
import gc, resource, sys, torch
from rs_pipeline.defs import worker_preload
print(gc.get_freeze_count(), len(gc.get_objects()))

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):  # 4 MiB blocks, allocated, written, freed: what a decode step does
        torch.empty(1 << 20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
trimmed = faults()
worker_preload.dask_setup()
faults()
print(trimmed, faults())
"""


def test_step_workers_freeze_their_imports_and_undo_the_nannys_malloc_trimming(tmp_path):
    """The preload leaves the garbage collector only what steps create (the imports' objects
    are frozen). A dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536``: every
    freed block over 128 KiB goes back to the kernel, so each new one page-faults in again. The
    worker's preload hook sets glibc's thresholds back: the same allocations then reuse the
    heap."""
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "DAGSTER_HOME": str(tmp_path)}
    env.pop("RS_PIPELINE_CONFIG", None)
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    frozen, tracked = int(out[-4]), int(out[-3])
    assert frozen > 100_000 and tracked < frozen / 20, (frozen, tracked)
    if platform_libc() != "glibc":
        return  # malloc thresholds are glibc's
    trimmed, restored = int(out[-2]), int(out[-1])
    assert trimmed >= 20 * 1000  # ~1,024 pages a block, every time
    assert restored < 100, (trimmed, restored)  # measured: ~20,500 and 0


def platform_libc() -> str:
    import platform

    return platform.libc_ver()[0]
