"""Recovery after a crash: runs whose process died are marked failed, their pool slots freed and
their half-written files removed, so the next run continues without manual clean-up.

Called only while holding the home's lock (``rs_pipeline.home_lock``): every live run on a home
holds that lock, so any other run still marked in flight has lost its process.
"""

from __future__ import annotations

import os

import dagster as dg

from rs_pipeline.context import RunContext
from rs_pipeline.home_lock import holds_lock

IN_FLIGHT = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
             dg.DagsterRunStatus.CANCELING]
CRASHED_TAG = "rs_pipeline/crashed"
OWNER_TAG = "rs_pipeline/owner"  # the process that created an in-process run (it holds the lock)


def owner_tags() -> dict[str, str]:
    return {OWNER_TAG: str(os.getpid())}


def recover(instance: dg.DagsterInstance, ctx: RunContext, current_run_id: str | None = None,
            mlflow=None) -> list[str]:
    """Mark dead runs failed, free their concurrency slots, remove temporary files left by
    interrupted writes, and (given the MLflow resource) stop MLflow runs left running. Returns
    one line per thing it repaired."""
    if not holds_lock(ctx.home):
        raise RuntimeError("recover() must run while holding the home lock")
    repaired = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        if run.run_id == current_run_id:
            continue
        instance.add_run_tags(run.run_id, {CRASHED_TAG: "true"})
        instance.report_run_failed(run, message="the process running it is gone (killed, out of "
                                                "memory or power loss); completed steps are kept")
        repaired.append(f"run {run.run_id} ({_what(run)}) had died: marked failed")
    # a run created in process (CLI, tick) by a process killed before it started: its creator
    # held the home lock, which we now hold, so that process is gone (UI runs carry no owner)
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.NOT_STARTED])):
        owner = run.tags.get(OWNER_TAG)
        if run.run_id == current_run_id or owner is None or owner == str(os.getpid()):
            continue
        instance.add_run_tags(run.run_id, {CRASHED_TAG: "true"})
        instance.report_run_failed(run, message="the process that created it died before it "
                                                "started")
        repaired.append(f"run {run.run_id} ({_what(run)}) never started: marked failed")
    storage = instance.event_log_storage
    for run_id in storage.get_concurrency_run_ids():
        if run_id == current_run_id:
            continue
        run = instance.get_run_by_id(run_id)
        if run is None or run.status not in IN_FLIGHT:
            storage.free_concurrency_slots_for_run(run_id)
            repaired.append(f"freed the pool slots of run {run_id}")
    removed = ctx.store.remove_temporaries()
    if removed:
        repaired.append(f"removed {removed} temporary file(s) of interrupted writes")
    if mlflow is not None:
        for key in mlflow.stop_running_rounds():
            repaired.append(f"MLflow run of {key} was left running: marked KILLED")
    return repaired


def _what(run: dg.DagsterRun) -> str:
    return run.tags.get("dagster/partition") or run.tags.get("rs_pipeline/stage") or run.job_name
