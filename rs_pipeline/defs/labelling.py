"""Rounds that wait for people's labels (``annotator.kind: human``), in Dagster terms.

A round whose ``preference_labels`` step finds no answer yet yields no output: its downstream
steps are skipped and the run ends successfully, tagged as waiting (the request folder and since
when). ``rounds.round_status`` reads those tags (state ``waiting``: new rounds are blocked, the
round is not failed and not resumed in a loop). The sensor ``labels_arrived`` watches the waiting
rounds' folders and resumes a round from ``preference_labels`` once an answer file is there or
the wait is over (then the refresh is skipped with the reason on record).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg

from rs_pipeline.annotators.human import RequestState, request_state
from rs_pipeline.context import resolve_home
from rs_pipeline.defs.jobs import round_job
from rs_pipeline.home_lock import busy

WAITING_TAG = "rs_pipeline/waiting_for_labels"  # "true" on the run that paused
REQUEST_TAG = "rs_pipeline/labels_request"  # the request folder
SINCE_TAG = "rs_pipeline/labels_requested_at"
TRIGGER_TAG = "rs_pipeline/trigger"
RESUMED_BY = "labels"  # the trigger tag of a run the sensor started
#: what a resumed round runs: the labels and everything after them
LABELS_ONWARD = ("preference_labels", "preference_model", "scores", "sft_dataset", "dpo_pairs",
                 "policy_checkpoint", "round_monitors", "round_eval", "promotion")


def pause(context: dg.AssetExecutionContext, mlflow, state: RequestState) -> None:
    """Record on the run that its round waits for labels (the step then yields no output); the
    round's MLflow run says so too and is SCHEDULED (not RUNNING, which reads as a dead job)."""
    key = context.partition_key
    context.instance.add_run_tags(context.run_id, {
        WAITING_TAG: "true", REQUEST_TAG: str(state.folder), SINCE_TAG: state.requested_at or ""})
    mlflow.note(key, {WAITING_TAG: state.describe(key)}, context.run_id)
    mlflow.client().set_terminated(mlflow.round_run(key, context.run_id), "SCHEDULED")
    context.log.info(f"{state.describe(context.partition_key)}: fill in "
                     f"{state.folder / 'requests.jsonl'} and save it as labels.jsonl (or import "
                     "the argilla/ or label_studio/ files); the labels_arrived sensor resumes it")


def waiting_request(run: dg.DagsterRun, now: dt.datetime | None = None) -> RequestState | None:
    """The label request a finished round run paused on (None: it did not pause)."""
    if run.status != dg.DagsterRunStatus.SUCCESS or run.tags.get(WAITING_TAG) != "true":
        return None
    return request_state(Path(run.tags[REQUEST_TAG]), now)


def labels_selection() -> list[dg.AssetKey]:
    return [dg.AssetKey(name) for name in LABELS_ONWARD]


def resume_tags(key: str, state: RequestState) -> dict[str, str]:
    return {"rs_pipeline/round": key, TRIGGER_TAG: RESUMED_BY, "rs_pipeline/resumes": "true",
            REQUEST_TAG: str(state.folder)}


def resume_requests(instance: dg.DagsterInstance, now: dt.datetime | None = None):
    """One ``RunRequest`` per round whose labels arrived or whose wait is over: the round's
    latest run paused on its request, or it was a resume that failed (a fixed answer file, a
    new content version, resumes it again). Keyed by the answer file's version, so each file
    (or expiry) triggers once."""
    from rs_pipeline.defs.rounds import ROUND_JOB, failure, latest_run

    candidates = instance.get_runs(dg.RunsFilter(
        job_name=ROUND_JOB, statuses=[dg.DagsterRunStatus.SUCCESS],
        tags={WAITING_TAG: "true"})) + instance.get_runs(dg.RunsFilter(
            job_name=ROUND_JOB, statuses=[dg.DagsterRunStatus.FAILURE],
            tags={TRIGGER_TAG: RESUMED_BY}))
    seen: set[str] = set()
    for run in candidates:
        key = run.tags.get("dagster/partition")
        if not key or key in seen:
            continue
        seen.add(key)
        latest = latest_run(instance, key)
        if latest is None or latest.run_id != run.run_id:
            continue  # resumed (or re-run) since
        if (run.status == dg.DagsterRunStatus.FAILURE
                and failure(instance, run.run_id)[0] != "preference_labels"):
            continue  # failed later (or refused by the gate): not the labels' doing
        state = request_state(Path(run.tags[REQUEST_TAG]), now)
        if state.ready:
            yield dg.RunRequest(run_key=f"{key}:{state.key}", partition_key=key,
                                asset_selection=labels_selection(),
                                tags=resume_tags(key, state))


@dg.sensor(job=round_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Resumes a round that waits for people's labels once a labels file is in "
                       "its request folder, or once annotator.wait_hours have passed.")
def labels_arrived(context: dg.SensorEvaluationContext):
    requests = list(resume_requests(context.instance))
    if not requests:
        return dg.SkipReason("no round waiting for labels has an answer yet")
    holder = busy(resolve_home())  # asked again at the next evaluation
    return dg.SkipReason(holder) if holder else requests
