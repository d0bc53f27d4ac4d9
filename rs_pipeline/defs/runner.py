"""Running the bootstrap and rounds in process, through the same job definitions the UI and the
schedule use; the runs land in the instance's history, so the UI shows them."""

from __future__ import annotations

import dagster as dg

from rs_pipeline.defs import job
from rs_pipeline.defs.partitions import add_round

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_bootstrap(instance: dg.DagsterInstance, quiet: bool = True) -> dg.ExecuteInProcessResult:
    return job("bootstrap").execute_in_process(
        instance=instance, run_config=QUIET if quiet else None, raise_on_error=False,
        tags={"rs_pipeline/stage": "bootstrap"})


def run_round(instance: dg.DagsterInstance, key: str | None = None,
              quiet: bool = True) -> tuple[str, dg.ExecuteInProcessResult]:
    """Add the round partition (next one by default) and run the ``round`` job for it.

    A round the gate refuses ends with a failed blocking check: the run fails, the candidate and
    its evaluation stay on record, and no promotion is materialized.
    """
    key = add_round(instance, key)
    result = job("round").execute_in_process(
        instance=instance, partition_key=key, run_config=QUIET if quiet else None,
        raise_on_error=False, tags={"rs_pipeline/round": key})
    return key, result


def failure_messages(result) -> list[str]:
    """One line per failed step: the step and its error's own message (no traceback)."""
    out = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error.cause is not None and "InputError" not in error.cls_name:
            error = error.cause
        out.append(f"{event.step_key}: {error.message.strip()}")
    return out
