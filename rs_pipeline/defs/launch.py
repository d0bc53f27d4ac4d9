"""What the nightly schedule and the continuous sensor share: the settings they are defined
with, and one tick that applies ``rounds.next_action`` and turns it into a run request."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import dagster as dg

from rs_pipeline.config import PipelineConfig
from rs_pipeline.context import RunContext
from rs_pipeline.defs.labelling import TRIGGER_TAG
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import add_round
from rs_pipeline.defs.recovery import recover
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.rounds import Action, next_action
from rs_pipeline.errors import InputError
from rs_pipeline.home_lock import busy, home_lock

#: Dagster creates a tick's run after the tick returns, so for a moment a round a tick has just
#: added has no run and reads as "pending". Another tick in that window (the continuous sensor
#: beside the nightly schedule) leaves it to its run instead of launching a second one; past
#: it, a pending round is one whose run was never created, and the next tick resumes it.
LAUNCH_GRACE_S = 120.0


def _launch_marker(home: Path, key: str) -> Path:
    return Path(home) / ".launching" / key


def _skip(home: Path, action: Action) -> str | None:
    """Why a tick does not launch ``action``: it is blocked, or it would resume a round another
    tick added moments ago (its run is being created); None: launch it."""
    if action.kind == "blocked":
        return action.reason
    marker = _launch_marker(home, action.key)
    if (action.kind == "resume" and action.state == "pending" and marker.exists()
            and time.time() - marker.stat().st_mtime < LAUNCH_GRACE_S):
        return f"round {action.key} was just requested: its run is starting"
    return None


def _launching(home: Path, key: str) -> None:
    marker = _launch_marker(home, key)
    marker.parent.mkdir(exist_ok=True)
    marker.touch()


@cache
def settings_at_load() -> PipelineConfig:
    """The settings when the definitions load (a cron, a sensor's interval and whether each
    starts running must be known then); a bad config is reported when a run starts."""
    try:
        return PipelineResource().ctx.settings
    except InputError:
        return PipelineConfig()


def request_round(instance: dg.DagsterInstance, ctx: RunContext, trigger: str,
                  decide: Callable[[Action], Action] = lambda action: action, *,
                  recover_dead: bool = True, run_key: bool = False
                  ) -> dg.RunRequest | dg.SkipReason:
    """Skip while a process holds the home; else (after repairing what dead runs left, with
    ``recover_dead``) take ``next_action``, let ``decide`` block it, add the round partition and
    request its run, tagged with ``trigger`` (``run_key``: the round's key, so a tick evaluated
    twice launches it once). Without ``recover_dead`` a tick that only skips never takes the
    lock, so it cannot make a run that is just starting find the home busy."""
    holder = busy(ctx.home)
    if holder:
        return dg.SkipReason(holder)
    if not recover_dead:
        action = decide(next_action(instance, ctx.store))
        if reason := _skip(ctx.home, action):
            return dg.SkipReason(reason)
    with home_lock(ctx.home, f"{trigger} tick"):
        if recover_dead:
            recover(instance, ctx, mlflow=MlflowResource(pipeline=PipelineResource()))
        action = decide(next_action(instance, ctx.store))
        if reason := _skip(ctx.home, action):
            return dg.SkipReason(reason)
        key = add_round(instance, action.key)
        _launching(ctx.home, key)
    tags = {"rs_pipeline/round": key, TRIGGER_TAG: trigger}
    if action.kind == "resume":
        tags["rs_pipeline/resumes"] = "true"
    return dg.RunRequest(run_key=key if run_key else None, partition_key=key, tags=tags)
