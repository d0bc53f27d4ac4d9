"""Nightly rounds: a schedule (off by default) that adds the next round and launches it.

It applies ``rounds.next_action``, the rule ``rs-pipeline demo``/``round`` follow: never start a
round while another runs on the home, finish an interrupted round first, and never stack a new
round behind a round that *failed* (a round the gate refused is not a failure). Each skip says
why.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from rs_pipeline.context import RunContext
from rs_pipeline.defs.jobs import round_job
from rs_pipeline.defs.launch import request_round, settings_at_load
from rs_pipeline.defs.resources import PipelineResource


def local_timezone() -> str:
    """The machine's IANA time zone (``TZ``, else ``/etc/localtime``), else UTC."""
    if os.environ.get("TZ"):
        return os.environ["TZ"].lstrip(":")
    link = Path("/etc/localtime")
    if link.is_symlink() and "zoneinfo/" in str(link.resolve()):
        return str(link.resolve()).split("zoneinfo/", 1)[1]
    return "UTC"


def tick(instance: dg.DagsterInstance, ctx: RunContext) -> dg.RunRequest | dg.SkipReason:
    """The nightly decision: skip while a round runs on the home or a failed round waits for a
    fix; finish an interrupted round; else add the next round and request it."""
    return request_round(instance, ctx, "nightly")


_SETTINGS = settings_at_load().schedule


@dg.schedule(
    cron_schedule=_SETTINGS.cron, job=round_job, name="nightly_round",
    execution_timezone=_SETTINGS.timezone or local_timezone(),
    default_status=(dg.DefaultScheduleStatus.RUNNING if _SETTINGS.enabled
                    else dg.DefaultScheduleStatus.STOPPED),
    description="Adds the next round partition and runs it from the champion policy.",
)
def nightly_round(context: dg.ScheduleEvaluationContext):
    # the resource's settings only: its run lifecycle (lock, preflight) belongs to runs
    return tick(context.instance, PipelineResource().ctx)
