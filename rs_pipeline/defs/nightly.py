"""Nightly rounds: a schedule (off by default) that adds the next round and launches it.

It never starts a round while another is running, and never stacks a new round behind a round
that *failed* (a round the gate refused is not a failure: the champion simply stays). Each skip
says why. ``rs-pipeline round`` applies the same rule.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from rs_pipeline.config import ScheduleConfig
from rs_pipeline.defs.jobs import round_job
from rs_pipeline.defs.partitions import add_round, round_number
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.errors import InputError
from rs_pipeline.history import round_row
from rs_pipeline.storage import AssetStore

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
             dg.DagsterRunStatus.CANCELING]


def local_timezone() -> str:
    """The machine's IANA time zone (``TZ``, else ``/etc/localtime``), else UTC."""
    if os.environ.get("TZ"):
        return os.environ["TZ"].lstrip(":")
    link = Path("/etc/localtime")
    if link.is_symlink() and "zoneinfo/" in str(link.resolve()):
        return str(link.resolve()).split("zoneinfo/", 1)[1]
    return "UTC"


def _round_of(run: dg.DagsterRun) -> str | None:
    key = run.tags.get("dagster/partition") or run.tags.get("rs_pipeline/round")
    try:
        return key if key and round_number(key) else None
    except ValueError:
        return None


def refused_by_gate(store: AssetStore, round_key: str) -> bool:
    """The round's evaluation is on record and the gate refused its candidate."""
    return round_row(store, round_key).state == "refused"


def blocking_reason(instance: dg.DagsterInstance, store: AssetStore) -> str | None:
    """Why a new round must not start now, or None."""
    runs = [r for r in instance.get_runs(limit=50) if _round_of(r)]
    active = [r for r in runs if r.status in IN_FLIGHT]
    if active:
        return f"round {_round_of(active[0])} is still running (run {active[0].run_id})"
    finished = [r for r in runs if r.status in (dg.DagsterRunStatus.SUCCESS,
                                                dg.DagsterRunStatus.FAILURE,
                                                dg.DagsterRunStatus.CANCELED)]
    if finished:
        last = finished[0]  # newest first
        key = _round_of(last)
        if last.status != dg.DagsterRunStatus.SUCCESS and not refused_by_gate(store, key):
            return (f"the last round {key} ended {last.status.value} (run {last.run_id}); "
                    f"re-run or fix it before new rounds")
    return None


def _schedule_settings() -> ScheduleConfig:
    """The schedule's settings, read when the definitions load (a cron must be known then)."""
    try:
        return PipelineResource().ctx.settings.schedule
    except InputError:  # a bad config is reported when a run starts, not at load
        return ScheduleConfig()


_SETTINGS = _schedule_settings()


@dg.schedule(
    cron_schedule=_SETTINGS.cron, job=round_job, name="nightly_round",
    execution_timezone=_SETTINGS.timezone or local_timezone(),
    default_status=(dg.DefaultScheduleStatus.RUNNING if _SETTINGS.enabled
                    else dg.DefaultScheduleStatus.STOPPED),
    description="Adds the next round partition and runs it from the champion policy.",
)
def nightly_round(context: dg.ScheduleEvaluationContext, pipeline: PipelineResource):
    reason = blocking_reason(context.instance, pipeline.ctx.store)
    if reason:
        return dg.SkipReason(reason)
    key = add_round(context.instance)
    return dg.RunRequest(run_key=key, partition_key=key,
                         tags={"rs_pipeline/round": key, "rs_pipeline/trigger": "nightly"})
