"""Running the bootstrap and rounds in process, through the same job definitions the UI and the
schedule use; the runs land in the instance's history, so the UI shows them."""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import TAGS_TO_MAYBE_OMIT_ON_RETRY

from rs_pipeline.defs import job, reconstructable_round
from rs_pipeline.defs.partitions import add_round, adopt_stored_rounds
from rs_pipeline.defs.recovery import CRASHED_TAG, owner_tags
from rs_pipeline.defs.resources import LOCK_TOKEN_TAG, lock_tags

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_bootstrap(instance: dg.DagsterInstance, quiet: bool = True) -> dg.ExecuteInProcessResult:
    return job("bootstrap").execute_in_process(
        instance=instance, run_config=QUIET if quiet else None, raise_on_error=False,
        tags={"rs_pipeline/stage": "bootstrap", **owner_tags()})


def _execute_round(instance: dg.DagsterInstance, key: str, tags: dict[str, str], quiet: bool,
                   asset_selection=None):
    """The ``round`` job for partition ``key``: in this process, or through the executor
    ``scale.executor`` names (its step processes join this process's hold of the home lock)."""
    from rs_pipeline.context import load_context

    ctx = load_context()
    tags = {**tags, **owner_tags()}
    run_config = QUIET if quiet else None
    if ctx.settings.scale.executor == "in_process":
        return job("round").execute_in_process(
            instance=instance, partition_key=key, run_config=run_config, raise_on_error=False,
            tags=tags, asset_selection=asset_selection)
    return dg.execute_job(reconstructable_round(ctx.settings.scale), instance=instance,
                          run_config=run_config, asset_selection=asset_selection,
                          tags={**tags, "dagster/partition": key, **lock_tags(ctx.home)},
                          raise_on_error=False)


def run_round(instance: dg.DagsterInstance, key: str | None = None,
              quiet: bool = True) -> tuple[str, dg.ExecutionResult]:
    """Add the round partition (next one by default) and run the ``round`` job for it.

    A round the gate refuses ends with a failed blocking check: the run fails, the candidate and
    its evaluation stay on record, and no promotion is materialized.
    """
    from rs_pipeline.context import load_context

    adopt_stored_rounds(instance, load_context().store)  # rounds another home left in storage
    key = add_round(instance, key)
    return key, _execute_round(instance, key, {"rs_pipeline/round": key}, quiet)


def reexecute_round(instance: dg.DagsterInstance, run: dg.DagsterRun,
                    quiet: bool = True) -> dg.ExecutionResult:
    """Dagster's re-execution from failure of a round's failed (or crashed) run: the steps
    that succeeded are kept, the failed and not-yet-run ones execute."""
    from rs_pipeline.context import load_context

    omit = {*TAGS_TO_MAYBE_OMIT_ON_RETRY, CRASHED_TAG, LOCK_TOKEN_TAG}
    ctx = load_context()
    tags = {**{k: v for k, v in run.tags.items() if k not in omit}, **owner_tags(),
            **lock_tags(ctx.home)}
    return dg.execute_job(reconstructable_round(ctx.settings.scale), instance=instance, tags=tags,
                          run_config=QUIET if quiet else None,
                          reexecution_options=dg.ReexecutionOptions.from_failure(
                              run.run_id, instance))


def continue_round(instance: dg.DagsterInstance, key: str, quiet: bool = True):
    """Finish an interrupted round: re-execute its last run from where it stopped, or run it
    afresh if it never ran (completed steps are reused either way); a round that waited for
    labels runs from ``preference_labels`` on."""
    from rs_pipeline.defs.labelling import labels_selection, resume_tags, waiting_request
    from rs_pipeline.defs.rounds import latest_run

    run = latest_run(instance, key)
    request = waiting_request(run) if run is not None else None
    if request is not None:  # paused for labels: from preference_labels on, as the sensor does
        return _execute_round(instance, key, resume_tags(key, request), quiet,
                              asset_selection=labels_selection())
    if run is not None and run.status in (dg.DagsterRunStatus.FAILURE,
                                          dg.DagsterRunStatus.CANCELED):
        return reexecute_round(instance, run, quiet)
    return run_round(instance, key, quiet)[1]


def failure_messages(instance: dg.DagsterInstance, result) -> list[str]:
    """One line per error of a run: the step (or "run") and the error's own message."""
    from rs_pipeline.defs.rounds import errors

    return [f"{step or 'run'}: {message}" for step, message in errors(instance, result.run_id)]
