"""Continuous mode's sensor, evaluated against a real DagsterInstance on a tiny home (rounds'
outcomes written as records and runs; the real chained rounds run under the daemon in
tests/test_nightly.py)."""

import datetime as dt
import json

import dagster as dg
import yaml
from dagster._core.test_utils import create_run_for_test

from rs_pipeline.defs.continuous import continuous_rounds
from rs_pipeline.defs.labelling import REQUEST_TAG, WAITING_TAG
from rs_pipeline.schemas import make_table
from rs_pipeline.storage import AssetStore
from tests.test_nightly import _refused


def _evaluate(instance):
    return continuous_rounds(dg.build_sensor_context(instance=instance))


def _settings(home, **continuous):
    path = home / "rs_pipeline.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["continuous"] = {"enabled": True, **continuous}
    path.write_text(yaml.safe_dump(cfg))


def _skip(instance) -> str:
    result = _evaluate(instance)
    assert isinstance(result, dg.SkipReason), result
    return result.skip_message


def _ended(instance, store, key):
    """Round ``key`` refused by the gate: its evaluation on record, its run failed on the check."""
    store.write_record("round_eval", _refused(key), key)
    create_run_for_test(instance, job_name="round", status=dg.DagsterRunStatus.FAILURE,
                        tags={"dagster/partition": key})


def _fail(instance, key):
    """A real failed run of ``key``: a step started and raised."""
    @dg.op
    def sample(_):
        raise ValueError("the policy folder is gone")

    @dg.job(name="round")
    def broken():
        sample()

    broken.execute_in_process(instance=instance, tags={"dagster/partition": key},
                              raise_on_error=False)


def _generations(store, key, tokens):
    rows = len(tokens)
    store.write_table("generations", make_table("generations", {
        "generation_id": [f"g{i}" for i in range(rows)], "round": [key] * rows,
        "prompt_id": ["p"] * rows, "prompt": ["012="] * rows, "sample_index": list(range(rows)),
        "completion": ["210"] * rows, "num_tokens": tokens, "finished": [True] * rows,
        "seed": [0] * rows, "policy_id": ["pol"] * rows, "temperature": [1.0] * rows,
        "top_k": [0] * rows, "top_p": [1.0] * rows, "max_new_tokens": [9] * rows,
        "rendered_prompt": ["012="] * rows}), key)


def test_the_sensor_chains_after_an_ended_round_only_and_stops_with_a_reason(tiny_home):
    assert continuous_rounds.default_status == dg.DefaultSensorStatus.STOPPED  # off by default
    instance = dg.DagsterInstance.get()
    store = AssetStore(str(tiny_home / "assets"))
    _settings(tiny_home, max_rounds=3)
    assert "no round yet" in _skip(instance)  # the first round is a person's (or the schedule's)
    assert not instance.get_dynamic_partitions("rounds")

    instance.add_dynamic_partitions("rounds", ["r0001"])
    _ended(instance, store, "r0001")
    req = _evaluate(instance)  # exactly the next round, keyed by its round
    assert isinstance(req, dg.RunRequest)
    assert (req.partition_key, req.run_key) == ("r0002", "r0002")
    assert req.tags["rs_pipeline/trigger"] == "continuous"
    assert instance.get_dynamic_partitions("rounds") == ["r0001", "r0002"]
    # asked again before its run exists: left to that run (no second request)
    assert _skip(instance) == "round r0002 was just requested: its run is starting"

    started = create_run_for_test(instance, job_name="round", status=dg.DagsterRunStatus.STARTED,
                                  tags={"dagster/partition": "r0002"})
    assert _skip(instance) == f"round r0002 is still running (run {started.run_id})"
    # a tick repairs nothing: a run the daemon just launched may not hold the home's lock yet
    assert instance.get_run_by_id(started.run_id).status == dg.DagsterRunStatus.STARTED
    instance.report_run_failed(instance.get_run_by_id(started.run_id))

    _fail(instance, "r0002")
    assert _skip(instance).startswith("continuous mode stopped: round r0002 failed in sample: "
                                      "the policy folder is gone. Fix the cause")

    folder = tiny_home / "labelling" / "r0002"
    folder.mkdir(parents=True)
    since = dt.datetime.now(dt.timezone.utc)
    (folder / "request.json").write_text(json.dumps({
        "requested_at": since.isoformat(), "wait_hours": 24.0,
        "deadline": (since + dt.timedelta(hours=24)).isoformat()}))
    create_run_for_test(instance, job_name="round", status=dg.DagsterRunStatus.SUCCESS,
                        tags={"dagster/partition": "r0002", WAITING_TAG: "true",
                              REQUEST_TAG: str(folder)})
    waiting = _skip(instance)
    assert waiting.startswith(f"round r0002 waits for labels in {folder}")
    assert instance.get_dynamic_partitions("rounds") == ["r0001", "r0002"]

    _ended(instance, store, "r0002")
    assert _evaluate(instance).partition_key == "r0003"
    _ended(instance, store, "r0003")
    assert _skip(instance) == ("continuous mode stopped: round budget spent: the home holds 3 "
                               "rounds (continuous.max_rounds: 3)")

    _settings(tiny_home, max_rounds=0, max_generated_tokens=30)
    _generations(store, "r0001", [9, 9])  # 9 + 9 tokens, and each row's end token
    assert _evaluate(instance).partition_key == "r0004"  # 20 < 30
    _generations(store, "r0002", [4, 4])
    assert _skip(instance) == ("continuous mode stopped: token budget spent: the rounds "
                               "generated 30 tokens (continuous.max_generated_tokens: 30)")


def test_the_sensor_leaves_interrupted_and_labelled_rounds_to_others(tiny_home):
    from rs_pipeline.defs.continuous import decide
    from rs_pipeline.defs.resources import PipelineResource
    from rs_pipeline.defs.rounds import Action

    instance, ctx = dg.DagsterInstance.get(), PipelineResource().ctx
    reasons = {
        "interrupted": "continuous mode stopped: round r0004 was interrupted in scores; "
                       "`rs-pipeline round` (or the nightly schedule) resumes it, then the chain "
                       "goes on",
        "labelled": "labels for round r0004 arrived: the labels_arrived sensor resumes it"}
    for state, reason in reasons.items():
        action = decide(instance, ctx, Action("resume", "r0004",
                                              "round r0004 was interrupted in scores", state))
        assert (action.kind, action.reason) == ("blocked", reason)


def test_a_round_a_tick_just_added_is_left_to_its_starting_run(tiny_home):
    """Dagster creates a tick's run after the tick returns: the nightly tick adds r0001, and the
    sensor's tick a moment later (no run yet: the round reads as pending) does not launch it a
    second time; once the grace has passed with still no run, a tick resumes it."""
    import os
    import time

    from rs_pipeline.context import load_context
    from rs_pipeline.defs.launch import LAUNCH_GRACE_S, request_round

    instance, ctx = dg.DagsterInstance.get(), load_context(tiny_home)
    first = request_round(instance, ctx, "nightly")
    assert isinstance(first, dg.RunRequest) and first.partition_key == "r0001"
    second = request_round(instance, ctx, "continuous", recover_dead=False)
    assert isinstance(second, dg.SkipReason)
    assert second.skip_message == "round r0001 was just requested: its run is starting"
    assert isinstance(request_round(instance, ctx, "nightly"), dg.SkipReason)
    old = time.time() - LAUNCH_GRACE_S - 1
    os.utime(tiny_home / ".launching" / "r0001", (old, old))
    third = request_round(instance, ctx, "nightly")
    assert isinstance(third, dg.RunRequest) and third.partition_key == "r0001"
    assert third.tags["rs_pipeline/resumes"] == "true"
    assert instance.get_dynamic_partitions("rounds") == ["r0001"]
