"""Where each round stands and what to do next: one rule for ``rs-pipeline demo``, ``round``,
``status`` and the nightly schedule.

- An *interrupted* round (its process died, it was stopped with Ctrl-C, or it never started) is
  resumed before anything else: completed steps are kept, the rest runs.
- A *failed* round (a step raised an error) blocks new rounds until it is fixed and re-run with
  ``rs-pipeline round --rerun rXXXX``; a failure is never shown as a refusal.
- A round the gate *refused* is finished: the champion simply stays.
- A round *waiting* for people's labels (``annotator.kind: human``) is neither failed nor
  interrupted: it blocks new rounds until its labels arrive or its wait is over, then it is
  resumed from ``preference_labels`` (by the ``labels_arrived`` sensor, or the next command).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from rs_pipeline.defs.labelling import waiting_request
from rs_pipeline.defs.partitions import adopt_stored_rounds, existing_rounds, next_round_key
from rs_pipeline.defs.recovery import CRASHED_TAG, IN_FLIGHT
from rs_pipeline.history import round_row
from rs_pipeline.storage import AssetStore

ROUND_JOB = "round"
USER_ERRORS = ("InputError", "HomeBusy")  # their message is the whole story
INTERRUPTED = "DagsterExecutionInterruptedError"  # Ctrl-C (SIGINT) inside a step


@dataclass(frozen=True)
class RoundStatus:
    round: str
    state: str  # pending | running | interrupted | failed | promoted | refused | waiting | labelled
    run_id: str | None = None
    step: str | None = None
    error: str | None = None
    reason: str | None = None  # the gate's reason (promoted/refused); the labels' (waiting/labelled)

    @property
    def finished(self) -> bool:
        return self.state in ("promoted", "refused")


@dataclass(frozen=True)
class Action:
    kind: str  # new | resume | blocked
    key: str
    reason: str = ""
    state: str = ""  # the latest round's state that decided it (empty for new)


def latest_run(instance: dg.DagsterInstance, key: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(job_name=ROUND_JOB, tags={"dagster/partition": key}),
                             limit=1)
    return runs[0] if runs else None


def _errors(instance: dg.DagsterInstance, run_id: str):
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if error is not None:
            yield event, error


def was_interrupted(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether a run was stopped with Ctrl-C (SIGINT) rather than failing on its own."""
    for _, error in _errors(instance, run_id):
        while error is not None:
            if error.cls_name == INTERRUPTED:
                return True
            error = error.cause
    return False


def errors(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str | None, str]]:
    """(step, message) of every error a run logged, a failed step's first; each message is the
    error's own (an ``InputError`` or the innermost cause), without traceback."""
    found = []
    for event, error in _errors(instance, run_id):
        while error.cause is not None and error.cls_name not in USER_ERRORS:
            error = error.cause
        message = error.message.strip()
        if message.startswith(f"{error.cls_name}: "):
            message = message[len(error.cls_name) + 2:]
        # the asset a step belongs to (a fanned-out asset's ops are "<asset>.<op>[part]")
        step = event.step_key.split(".")[0] if event.step_key else None
        found.append((step, message))
    found.sort(key=lambda e: e[0] is None)
    return list(dict.fromkeys(found))


def failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str | None, str | None]:
    """The step that failed in a run (None: before any step) and its error's message."""
    found = errors(instance, run_id)
    return found[0] if found else (None, None)


def _started_steps(instance: dg.DagsterInstance, run_id: str) -> bool:
    return bool(instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))


def round_status(instance: dg.DagsterInstance, store: AssetStore, key: str) -> RoundStatus:
    row = round_row(store, key)
    run = latest_run(instance, key)
    if row.state in ("promoted", "refused") and (run is None or run.status not in IN_FLIGHT):
        return RoundStatus(key, row.state, run.run_id if run else None, reason=row.reason)
    if run is None:
        return RoundStatus(key, "pending")
    if run.status in IN_FLIGHT or run.status in (dg.DagsterRunStatus.QUEUED,
                                                 dg.DagsterRunStatus.NOT_STARTED):
        return RoundStatus(key, "running", run.run_id)
    request = waiting_request(run)
    if request is not None:  # paused for people's labels: "labelled" once they can resume it
        return RoundStatus(key, "labelled" if request.ready else "waiting", run.run_id,
                           "preference_labels", reason=request.describe(key))
    if run.status == dg.DagsterRunStatus.SUCCESS:  # a partial re-materialization
        return RoundStatus(key, "interrupted", run.run_id)
    step, error = failure(instance, run.run_id)
    crashed = (run.tags.get(CRASHED_TAG) == "true" or run.status == dg.DagsterRunStatus.CANCELED
               or was_interrupted(instance, run.run_id))
    if crashed or not _started_steps(instance, run.run_id):
        return RoundStatus(key, "interrupted", run.run_id, step, error)
    return RoundStatus(key, "failed", run.run_id, step, error)


def all_statuses(instance: dg.DagsterInstance, store: AssetStore) -> list[RoundStatus]:
    adopt_stored_rounds(instance, store)
    return [round_status(instance, store, k) for k in existing_rounds(instance)]


def next_action(instance: dg.DagsterInstance, store: AssetStore) -> Action:
    """What the next ``demo``/``round``/tick does: resume the latest round, refuse to stack on a
    failed one, or start a new round (its key not yet added)."""
    adopt_stored_rounds(instance, store)
    keys = existing_rounds(instance)
    if keys:
        status = round_status(instance, store, keys[-1])
        if status.state == "waiting":
            return Action("blocked", status.round, status.reason or "", status.state)
        if status.state == "labelled":
            return Action("resume", status.round, status.reason or "", status.state)
        if status.state in ("pending", "interrupted"):
            return Action("resume", status.round, f"round {status.round} was interrupted"
                          + (f" in {status.step}" if status.step else ""), status.state)
        if status.state == "running":
            return Action("blocked", status.round, f"round {status.round} is still running "
                          f"(run {status.run_id})", status.state)
        if status.state == "failed":
            return Action("blocked", status.round, (
                f"round {status.round} failed in {status.step or 'its run'}: {status.error}. "
                f"Fix the cause, then `rs-pipeline round --rerun {status.round}` re-executes it "
                "from the failed step"), status.state)
    return Action("new", next_round_key(instance))
