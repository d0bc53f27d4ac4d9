"""The nightly schedule: tested with Dagster's schedule context, and once for real with the daemon
(with the continuous sensor chaining the next round)."""

import time

import dagster as dg
import pytest
import yaml
from dagster._core.test_utils import create_run_for_test

from rs_pipeline.defs.nightly import local_timezone, nightly_round
from rs_pipeline.defs.rounds import Action, next_action
from rs_pipeline.records import (
    GateDecision,
    PolicyEvaluation,
    PolicyMetrics,
    RoundEvaluation,
)
from rs_pipeline.storage import AssetStore
from tests.conftest import live_daemon


def _evaluate(instance):
    return nightly_round(dg.build_schedule_context(instance=instance))


def _refused(key: str) -> RoundEvaluation:
    m = PolicyMetrics(n_prompts=4, distinct_share=1.0, mean_length=8.0, greedy_acc=0.5)
    ev = PolicyEvaluation(eval=m, gate=m)
    return RoundEvaluation(key, "pol-c", "pol-b", "rm-x", ev, ev, GateDecision(
        False, "greedy_acc", 0.4, 0.5, True, False, "regression"))


def test_schedule_adds_the_next_round_and_requests_it(tiny_home):
    instance = dg.DagsterInstance.get()
    req = _evaluate(instance)
    assert isinstance(req, dg.RunRequest) and req.partition_key == "r0001"
    assert instance.has_dynamic_partition("rounds", "r0001")
    assert req.tags["rs_pipeline/trigger"] == "nightly"
    assert nightly_round.default_status == dg.DefaultScheduleStatus.STOPPED  # off by default
    assert nightly_round.cron_schedule == "0 2 * * *"
    assert nightly_round.execution_timezone == local_timezone()


def test_schedule_skips_a_busy_home_resumes_a_dead_round_and_goes_on_after_a_refusal(tiny_home):
    from tests.test_home_lock import _hold

    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions("rounds", ["r0001"])
    holder = _hold(tiny_home)  # another process is running a round on this home
    try:
        skip = _evaluate(instance)
        assert isinstance(skip, dg.SkipReason) and f"pid {holder.pid}" in skip.skip_message
    finally:
        holder.kill()
        holder.wait()
    # a run left STARTED by a process that is gone: recovered, and its round resumed
    run = create_run_for_test(instance, job_name="round", status=dg.DagsterRunStatus.STARTED,
                              tags={"dagster/partition": "r0001"})
    req = _evaluate(instance)
    assert isinstance(req, dg.RunRequest) and req.partition_key == "r0001"
    assert req.tags["rs_pipeline/resumes"] == "true"
    dead = instance.get_run_by_id(run.run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE and dead.tags["rs_pipeline/crashed"] == "true"
    # a round the gate refused is finished: the next round may start
    store = AssetStore(str(tiny_home / "assets"))
    store.write_record("round_eval", _refused("r0001"), "r0001")
    assert next_action(instance, store) == Action("new", "r0002")
    req = _evaluate(instance)
    assert isinstance(req, dg.RunRequest) and req.partition_key == "r0002"


def _state(instance, name: str):
    return next((s for s in instance.all_instigator_state() if s.instigator_name == name), None)


def _ticks(instance, name: str, limit: int = 3):
    state = _state(instance, name)
    return instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=limit)


@pytest.mark.slow
def test_daemon_runs_the_nightly_round_then_chains_a_continuous_one(tiny_home):
    """dagster-daemon against the temp home: a tick of an every-minute schedule starts r0001
    (then the schedule is stopped), the continuous sensor chains r0002 once r0001 ended, then
    stops at its budget (rounds smaller than TINY's, so the second round costs little)."""
    from rs_pipeline.defs.rounds import round_status
    from rs_pipeline.defs.runner import run_bootstrap

    cfg = yaml.safe_load((tiny_home / "rs_pipeline.yaml").read_text())
    cfg["task"].update(round_size=48, eval_size=32, gate_size=32)
    cfg["policy"]["pretrain_steps"] = 40
    cfg["preference"].update(seed_pairs=160, pairs_per_round=40, replay_pairs=20)
    (tiny_home / "rs_pipeline.yaml").write_text(yaml.safe_dump(cfg))
    instance = dg.DagsterInstance.get()
    assert run_bootstrap(instance).success
    cfg["schedule"] = {"enabled": True, "cron": "* * * * *", "timezone": "UTC"}
    cfg["continuous"] = {"enabled": True, "max_rounds": 2, "interval_seconds": 2}
    (tiny_home / "rs_pipeline.yaml").write_text(yaml.safe_dump(cfg))
    budget = "continuous mode stopped: round budget spent"
    with live_daemon(tiny_home) as alive:
        deadline, done = time.time() + 420, False
        while time.time() < deadline and not done:
            alive()
            time.sleep(3)
            nightly = _state(instance, "nightly_round")
            if nightly and nightly.is_running and instance.get_runs(
                    dg.RunsFilter(tags={"rs_pipeline/trigger": "nightly"})):
                # one tick is enough: stopped (as in the UI) before its next minute
                instance.stop_schedule(nightly.instigator_origin_id, nightly.selector_id)
            done = instance.has_dynamic_partition("rounds", "r0002") and any(
                budget in (t.skip_reason or "") for t in _ticks(instance, "continuous_rounds"))
        assert done, (tiny_home / "daemon.log").read_text()[-3000:]
    store = AssetStore(str(tiny_home / "assets"))
    records = {r.dagster_run.tags["dagster/partition"]: r
               for r in instance.get_run_records(dg.RunsFilter(job_name="round"))}
    runs = {key: r.dagster_run for key, r in records.items()}
    assert sorted(runs) == ["r0001", "r0002"]  # one run each: never two rounds at once
    assert len(_ticks(instance, "nightly_round", limit=10)) == 1
    assert runs["r0001"].tags["rs_pipeline/trigger"] == "nightly"
    assert runs["r0002"].tags["rs_pipeline/trigger"] == "continuous"
    assert runs["r0002"].tags["dagster/run_key"] == "r0002"
    assert records["r0002"].start_time >= records["r0001"].end_time  # chained: after r0001 ended
    for key in runs:  # both ran to their gate's decision (promoted or refused)
        assert round_status(instance, store, key).finished
    base = store.read_record("base_policy")
    assert store.read_record("sampling_policy", "r0001").checkpoint.id == base.id
    champion = (store.read_record("promotion", "r0001").checkpoint.id
                if store.exists("promotion", "r0001", "json") else base.id)
    assert store.read_record("sampling_policy", "r0002").checkpoint.id == champion
    # refreshed each round: r0002's preference model continues r0001's
    assert store.read_record("preference_model", "r0002").parent_id == store.read_record(
        "preference_model", "r0001").id
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tiny_home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rs_pipeline")
    for key, run in runs.items():
        mrun = client.search_runs([exp.experiment_id], f"tags.round = '{key}'")[0]
        assert mrun.data.tags["dagster_run_id"] == run.run_id
    ckpt = store.read_record("policy_checkpoint", "r0001")
    version = client.search_model_versions(f"name = 'rs-policy' and tag.model_id = '{ckpt.id}'")
    assert version[0].tags["parent_id"] == base.id
