"""Materializing the bootstrap and rounds through Dagster, in process, against an instance.

The CLI and the tests use this; the runs land in the instance's history, so the UI shows them.
"""

from __future__ import annotations

import dagster as dg

from rs_pipeline.defs import default_resources
from rs_pipeline.defs.assets import ALL_ASSETS
from rs_pipeline.defs.partitions import add_round
from rs_pipeline.defs.resources import PipelineResource

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def materialize_bootstrap(instance: dg.DagsterInstance, quiet: bool = True,
                          raise_on_error: bool = True):
    return dg.materialize(ALL_ASSETS, instance=instance, resources=default_resources(),
                          selection=dg.AssetSelection.groups("bootstrap"),
                          run_config=QUIET if quiet else None, raise_on_error=raise_on_error,
                          tags={"rs_pipeline/stage": "bootstrap"})


def failure_messages(result) -> list[str]:
    """One line per failed step: the step and its error's own message (no traceback)."""
    out = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error.cause is not None and "InputError" not in error.cls_name:
            error = error.cause
        out.append(f"{event.step_key}: {error.message.strip()}")
    return out


def materialize_round(instance: dg.DagsterInstance, key: str | None = None, quiet: bool = True):
    """Add the round partition (next one by default) and materialize every round asset for it.

    A round the gate refuses ends with a failed blocking check: the run fails, the candidate and
    its evaluation stay on record, and no promotion is materialized.
    """
    key = add_round(instance, key)
    result = dg.materialize(ALL_ASSETS, instance=instance, resources=default_resources(),
                            selection=dg.AssetSelection.groups("round"), partition_key=key,
                            run_config=QUIET if quiet else None, raise_on_error=False,
                            tags={"rs_pipeline/round": key})
    return key, result


def round_summary(key: str) -> dict:
    """One row of the demo's table, read back from the stored assets."""
    store = PipelineResource().store
    row: dict = {"round": key}
    if store.exists("policy_checkpoint", key, "json"):
        row["policy_id"] = store.read_json("policy_checkpoint", key)["id"]
    if store.exists("sft_dataset", key):
        row["kept"] = store.num_rows("sft_dataset", key)
    if store.exists("preference_model", key, "json"):
        pm = store.read_json("preference_model", key)
        row["pair_acc"] = pm.get("pair_acc")
        row["pair_acc_verifier"] = pm.get("pair_acc_verifier")
    if store.exists("round_eval", key, "json"):
        ev = store.read_json("round_eval", key)
        row.update(greedy=ev["candidate"]["eval"]["greedy_acc"],
                   sampled=ev["candidate"]["eval"]["sample_acc"],
                   gate=ev["candidate"]["gate"]["greedy_acc"],
                   champion_gate=ev["champion"]["gate"]["greedy_acc"],
                   decision=ev["decision"]["reason"], promoted=ev["decision"]["promoted"])
    row["promoted"] = store.exists("promotion", key, "json")
    return row
