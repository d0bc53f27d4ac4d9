"""Rounds that ask people for labels, through Dagster: a round pauses on its request, blocks new
rounds, and the labels_arrived sensor resumes it when a labels file arrives (a live
dagster-daemon evaluates it and launches the run), or when the wait is over (evaluated against
the instance with the clock moved; the refresh is then skipped, reason on record)."""

import datetime as dt
import json
import random
import time

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rs_pipeline.config import merge
from rs_pipeline.storage import AssetStore
from tests.conftest import PROMOTE_ALL, live_daemon, make_home

ROUND_ASSETS_AFTER_LABELS = ("preference_model", "scores", "sft_dataset", "dpo_pairs",
                             "policy_checkpoint", "round_monitors", "round_eval", "promotion")


def _seed_file(path):
    from rs_pipeline.tasks import get_task

    task = get_task("rev8")
    prompts = task.prompts()[::40]
    pq.write_table(pa.table({"prompt": prompts, "completion_a": [task.answer(p) for p in prompts],
                             "completion_b": [task.wrong_answer(p, random.Random(i))
                                              for i, p in enumerate(prompts)],
                             "hp": [1.0] * len(prompts)}), path)
    return path


def _sensor(instance):
    from rs_pipeline.defs.labelling import labels_arrived

    return labels_arrived(dg.build_sensor_context(instance=instance))


def _materialized(instance, asset, key):
    return key in instance.get_materialized_partitions(dg.AssetKey(asset))


def _run_request(instance, req):
    from rs_pipeline.defs import job

    return job("round").execute_in_process(
        instance=instance, partition_key=req.partition_key, asset_selection=req.asset_selection,
        tags=req.tags, raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})


@pytest.mark.slow
def test_a_round_waits_for_people_and_the_sensor_resumes_it(tmp_path, monkeypatch, capsys):
    from rs_pipeline.annotators import human
    from rs_pipeline.cli import main
    from rs_pipeline.defs.nightly import tick
    from rs_pipeline.defs.resources import PipelineResource
    from rs_pipeline.defs.rounds import next_action, round_status
    from rs_pipeline.defs.runner import failure_messages, run_bootstrap, run_round
    from rs_pipeline.tasks import get_task

    cfg = merge(PROMOTE_ALL, {"annotator": {"kind": "human"},
                              "preference": {"seed_labels_path": str(_seed_file(
                                  tmp_path / "seed.parquet"))}})
    home = make_home(tmp_path / "home", monkeypatch, cfg)
    instance = dg.DagsterInstance.get()
    boot = run_bootstrap(instance)
    assert boot.success, failure_messages(instance, boot)
    store = AssetStore(str(home / "assets"))

    # round 1 pauses on its request: no labels, nothing downstream, the run did not fail
    key, result = run_round(instance)
    assert result.success and key == "r0001"
    folder = home / "labelling" / key
    manifest = json.loads((folder / "request.json").read_text())
    n = manifest["pairs"]
    assert 40 <= n <= 80  # pairs_per_round 80 at most, distinct completions only
    assert pq.read_table(folder / "requests.parquet").num_rows == n
    assert len((folder / "requests.jsonl").read_text().splitlines()) == n
    assert len(json.loads((folder / "argilla" / "records.json").read_text())) == n
    assert len(json.loads((folder / "label_studio" / "tasks.json").read_text())) == n
    assert _materialized(instance, "generations", key)
    for asset in ("preference_labels", *ROUND_ASSETS_AFTER_LABELS):
        assert not _materialized(instance, asset, key), asset
    waits = f"round r0001 waits for labels in {folder} since {manifest['requested_at']}"
    status = round_status(instance, store, key)
    assert (status.state, status.reason) == ("waiting", waits)
    assert next_action(instance, store).kind == "blocked"
    assert next_action(instance, store).reason == waits
    skip = tick(instance, PipelineResource().ctx)  # the nightly schedule does not stack a round
    assert isinstance(skip, dg.SkipReason) and skip.skip_message == waits
    assert main(["round", "--home", str(home)]) == 3  # nor does the command line
    assert main(["status", "--home", str(home)]) == 0
    assert f"r0001  waiting      {waits}" in capsys.readouterr().out
    assert isinstance(_sensor(instance), dg.SkipReason)  # nothing to resume yet
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rs_pipeline").experiment_id
    mrun = client.search_runs([exp], f"tags.round = '{key}'")[0]
    assert mrun.info.status == "SCHEDULED"  # not left RUNNING (recovery would call it dead)
    assert mrun.data.tags["rs_pipeline/waiting_for_labels"] == waits

    # people answer: hp from the verifier, some pairs written the other way round
    task = get_task("rev8")
    rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows):
        a_ok = task.verify(r["prompt"], r["completion_a"])
        b_ok = task.verify(r["prompt"], r["completion_b"])
        r["hp"] = 0.5 if a_ok == b_ok else float(a_ok > b_ok)
        if i % 3 == 0:
            r["completion_a"], r["completion_b"], r["hp"] = r["completion_b"], r["completion_a"], \
                1.0 - r["hp"]
        if i % 2 == 0:
            r["annotator_id"] = "alice"
    (folder / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    requests = _sensor(instance)
    assert len(requests) == 1
    req = requests[0]
    assert req.partition_key == key and req.run_key.startswith("r0001:labels.jsonl@")
    assert req.tags["rs_pipeline/trigger"] == "labels"
    assert {k.path[-1] for k in req.asset_selection} == {"preference_labels",
                                                         *ROUND_ASSETS_AFTER_LABELS}
    with live_daemon(home) as alive:  # the daemon evaluates the sensor and launches the run
        deadline, runs = time.time() + 300, []
        while time.time() < deadline and not (runs and runs[0].is_finished):
            alive()
            time.sleep(1)
            runs = instance.get_runs(dg.RunsFilter(tags={"rs_pipeline/trigger": "labels"}))
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS, \
        (home / "daemon.log").read_text()[-3000:]
    assert runs[0].tags["dagster/run_key"] == req.run_key
    labels = store.read_table("preference_labels", key).to_pylist()
    by_pair = {(r["prompt"], r["completion_a"], r["completion_b"]): r["hp"] for r in rows}
    assert len(labels) == n
    for lab in labels:  # exactly the file's labels, read in the requested order
        pair = (lab["prompt"], lab["completion_a"], lab["completion_b"])
        flipped = (lab["prompt"], lab["completion_b"], lab["completion_a"])
        assert lab["hp"] == (by_pair[pair] if pair in by_pair else 1.0 - by_pair[flipped])
        assert lab["annotator"] == "human" and lab["label_source"].startswith(
            f"{folder / 'labels.jsonl'}@") and lab["labelled_at"]
    assert {lab["annotator_id"] for lab in labels} == {"alice", "human:labels.jsonl"}
    pm = store.read_record("preference_model", key)
    assert pm.skipped_reason is None and pm.round == key
    assert pm.train_pairs == sum(lab["split"] == "train" for lab in labels)
    assert round_status(instance, store, key).state == "promoted"
    assert client.get_run(mrun.info.run_id).info.status == "FINISHED"
    assert isinstance(_sensor(instance), dg.SkipReason)  # a file triggers once

    # round 2 pauses; nobody answers; the clock moves past the wait
    key2, result = run_round(instance)
    assert result.success and round_status(instance, store, key2).state == "waiting"
    real_now = human.utc_now
    monkeypatch.setattr(human, "utc_now", lambda: real_now() + dt.timedelta(hours=25))
    folder2 = home / "labelling" / key2
    assert round_status(instance, store, key2).state == "labelled"  # may resume now
    requests = _sensor(instance)
    assert len(requests) == 1 and requests[0].run_key.startswith("r0002:expired@")
    resumed = _run_request(instance, requests[0])
    assert resumed.success, failure_messages(instance, resumed)
    assert store.read_table("preference_labels", key2).num_rows == 0
    pm2 = store.read_record("preference_model", key2)
    assert pm2.id == pm.id  # round 1's preference model is kept ...
    assert pm2.skipped_reason == (f"no labels arrived in {folder2} within 24 h: the previous "
                                  "preference model is kept")
    assert set(store.read_table("scores", key2).column("reward_model_id").to_pylist()) == {pm.id}
    assert store.exists("round_eval", key2, "json")  # ... and the round completes
    assert round_status(instance, store, key2).finished
    assert isinstance(_sensor(instance), dg.SkipReason)
