"""Work done once, damage named, bad input refused before work starts (in process, tiny budgets)."""

import json
import shutil

import dagster as dg
import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from rs_pipeline.cli import main
from rs_pipeline.config import merge
from rs_pipeline.defs.reuse import FORCE_TAG
from rs_pipeline.defs.rounds import failure
from rs_pipeline.defs.runner import run_bootstrap, run_round
from rs_pipeline.storage import AssetStore
from tests.conftest import TINY, make_home

MODEL_STEPS = ["generations", "preference_labels", "preference_model", "scores",
               "policy_checkpoint", "round_eval"]


@pytest.fixture
def home(two_promoted_rounds, tmp_path, monkeypatch):
    """A copy of the session's two-promoted-rounds home, to change freely."""
    copy = tmp_path / "home"
    shutil.copytree(two_promoted_rounds[0], copy)
    monkeypatch.setenv("DAGSTER_HOME", str(copy))
    monkeypatch.delenv("RS_PIPELINE_CONFIG", raising=False)
    return copy


def _no_model_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("model work was done")

    # the context reaches rs_pipeline.modeling at call time (imports.lazy_module)
    for name in ("rs_pipeline.modeling.load_policy", "rs_pipeline.modeling.load_preference",
                 "rs_pipeline.engines.load_policy",
                 "rs_pipeline.steps.bootstrap.pretrain_base_policy",
                 "rs_pipeline.steps.judging.preference_from_policy",
                 "rs_pipeline.steps.judging.likelihood_preference",
                 "rs_pipeline.steps.judging.load_preference"):
        monkeypatch.setattr(name, refuse)


def _metadata(instance, asset, key=None):
    flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key] if key else None)
    record = instance.fetch_materializations(flt, limit=1).records[0]
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_rematerializing_an_unchanged_round_does_no_model_work(home, monkeypatch):
    store = AssetStore(str(home / "assets"))
    before = {a: store.read_table(a, "r0001") for a in ("generations", "scores", "sft_dataset")}
    instance = dg.DagsterInstance.get()
    _no_model_work(monkeypatch)
    assert run_bootstrap(instance).success
    key, result = run_round(instance, "r0001")
    assert result.success
    for asset in MODEL_STEPS:
        assert _metadata(instance, asset, "r0001")["reused"] is True, asset
    for asset, table in before.items():
        assert store.read_table(asset, "r0001").equals(table)
    # forcing it does the work again (here: the patched loaders refuse, so the run fails)
    forced = dg.DagsterInstance.get()
    from rs_pipeline.defs import job

    result = job("round").execute_in_process(instance=forced, partition_key="r0001",
                                             tags={FORCE_TAG: "true"}, raise_on_error=False)
    assert not result.success
    assert failure(forced, result.run_id) == ("generations", "model work was done")


def test_the_champion_never_moves_back_to_an_older_round(home):
    instance = dg.DagsterInstance.get()
    store = AssetStore(str(home / "assets"))
    latest = store.read_record("promotion", "r0002").checkpoint.id
    run_round(instance, "r0001")  # re-materialize the older round, promotion included
    assert _metadata(instance, "promotion", "r0001")["champion"] == "stays with round r0002"
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    assert client.get_model_version_by_alias("rs-policy", "champion").tags["model_id"] == latest


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_champion_is_refused_on_load_naming_its_folder(home, damage, capsys):
    store = AssetStore(str(home / "assets"))
    champion = store.read_record("promotion", "r0002").checkpoint
    weights = home / "assets" / champion.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        for i in range(len(data) - 400, len(data) - 200):
            data[i] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        weights.write_bytes(bytes(data[: len(data) // 2]))
    assert main(["round", "--home", str(home)]) == 1
    err = capsys.readouterr().err
    folder = str(home / "assets" / champion.path)
    assert f"policy folder {folder}" in err and "generations" in err
    assert ("does not hold checkpoint " + champion.id if damage == "flip"
            else "cannot be loaded") in err
    assert main(["status", "--home", str(home)]) == 0
    assert "r0003  failed" in capsys.readouterr().out
    assert main(["round", "--home", str(home)]) == 3  # a failed round blocks new ones
    err = capsys.readouterr().err
    assert "round r0003 failed in generations" in err and "--rerun r0003" in err
    assert main(["round", "--rerun", "r0003", "--home", str(home)]) == 1  # still damaged
    assert "re-running round r0003 from generations" in capsys.readouterr().out


def test_a_deleted_table_is_one_clear_error_naming_it(home, capsys):
    path = home / "assets" / "sft_dataset" / "r0001.parquet"
    path.unlink()
    assert main(["lineage", "data", "sft_dataset", "--round", "r0001", "--home", str(home)]) == 2
    assert "no partition 'r0001'" in capsys.readouterr().err
    instance = dg.DagsterInstance.get()
    from rs_pipeline.defs import job

    result = job("round").execute_in_process(
        instance=instance, partition_key="r0001", raise_on_error=False,
        asset_selection=[dg.AssetKey("policy_checkpoint")], tags={FORCE_TAG: "true"})
    assert not result.success
    step, message = failure(instance, result.run_id)
    assert step == "policy_checkpoint"
    assert f"{path} is missing: sft_dataset of round r0001 was deleted" in message


def test_labels_that_cover_none_of_a_rounds_pairs_skip_the_refresh(tmp_path, monkeypatch):
    from rs_pipeline.tasks import get_task

    task = get_task("rev8")
    seed_prompts = task.prompts()[::40]
    seed = tmp_path / "seed.parquet"  # labelled before any round: right answer vs the bug
    pq.write_table(pa.table({"prompt": seed_prompts,
                             "completion_a": [task.answer(p) for p in seed_prompts],
                             "completion_b": [task.wrong_answer(p, __import__("random").Random(i))
                                              for i, p in enumerate(seed_prompts)],
                             "hp": [1.0] * len(seed_prompts)}), seed)
    labels = tmp_path / "labels.parquet"  # a human's file made before the round: covers none
    pq.write_table(pa.table({"prompt": ["00000000=", "11111111="],
                             "completion_a": ["00000000", "11111111"],
                             "completion_b": ["00000010", "11111011"], "hp": [1.0, 1.0]}), labels)
    cfg = merge(TINY, {"annotator": {"kind": "file", "path": str(labels)},
                       "preference": {"seed_labels_path": str(seed)}})
    make_home(tmp_path / "home", monkeypatch, cfg)
    instance = dg.DagsterInstance.get()
    assert run_bootstrap(instance).success
    key, result = run_round(instance)
    store = AssetStore(str(tmp_path / "home" / "assets"))
    seed = store.read_record("seed_preference_model")
    pm = store.read_record("preference_model", key)
    assert store.read_table("preference_labels", key).num_rows == 0
    assert pm.id == seed.id and "no labelled pairs of round r0001" in pm.skipped_reason
    assert set(store.read_table("scores", key).column("reward_model_id").to_pylist()) == {seed.id}
    assert store.exists("round_eval", key, "json")  # the round went on to its evaluation
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("rs_pipeline").experiment_id],
                             f"tags.round = '{key}'")[0]
    assert run.data.metrics["pref/refresh_skipped"] == 1.0
    assert "no labelled pairs" in run.data.tags["pref/refresh_skipped"]


def test_bad_files_and_storage_are_refused_before_any_run(tmp_path, tiny_policy, monkeypatch,
                                                          capsys):
    monkeypatch.delenv("RS_PIPELINE_CONFIG", raising=False)
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "0120="}, {"prompt": None}, {"prompt": 7}, {"prompt": "0" * 200_000},
             {"prompt": "01x2="}]
    prompts.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"prompt": "0120=", "completion_a": "0210",
                                  "completion_b": "0201", "hp": float("nan")}) + "\n")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "task": {"name": "prompts_file", "prompts_path": str(prompts), "eval_size": 1,
                 "gate_size": 1},
        "policy": {"base_path": str(tiny_policy)}, "generation": {"max_new_tokens": 8},
        "annotator": {"kind": "file", "path": str(labels)},
        "preference": {"seed_labels_path": str(labels)},
        "storage": {"base_uri": str(not_a_dir / "storage")}}))
    home = tmp_path / "h"
    assert main(["demo", "--config", str(cfg), "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "preflight found 6 problem(s); nothing was run" in err
    for text in (f"{prompts}, row 1, column 'prompt': missing value",
                 f"{prompts}, row 2, column 'prompt': expected text, got int 7",
                 f"{prompts}, row 3, column 'prompt': 200000 tokens plus up to",
                 f"{prompts}, row 4, column 'prompt': holds text the policy's tokenizer cannot",
                 f"{labels}, row 0, column 'hp': must be a finite number in [0, 1], got nan",
                 f"setting storage.base_uri: {not_a_dir}/storage is not writable (Not a "
                 "directory)"):
        assert text in err, text
    assert "Traceback" not in err
    assert not (home / "history").exists()  # no run was even created
    assert [p for p in home.rglob("*") if p.suffix in (".parquet", ".json")] == []


def test_a_run_whose_creator_died_before_it_started_is_recovered(home):
    """kill -9 between creating a round's run and starting it left it NOT_STARTED, and the
    next demo stopped on "round is still running" (found by tools/kill_trials.py)."""
    from rs_pipeline.context import load_context
    from rs_pipeline.defs import job
    from rs_pipeline.defs.recovery import CRASHED_TAG, OWNER_TAG, recover
    from rs_pipeline.home_lock import home_lock

    instance = dg.DagsterInstance.get()
    dead = instance.create_run_for_job(job("round"), tags={OWNER_TAG: "999999999",
                                                           "dagster/partition": "r0002",
                                                           "rs_pipeline/round": "r0002"})
    ui = instance.create_run_for_job(job("round"), tags={"dagster/partition": "r0002"})
    ctx = load_context(home)
    with home_lock(home, "test"):
        repaired = recover(instance, ctx)
    assert any("never started" in line for line in repaired)
    run = instance.get_run_by_id(dead.run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE and run.tags[CRASHED_TAG] == "true"
    assert instance.get_run_by_id(ui.run_id).status == dg.DagsterRunStatus.NOT_STARTED


def test_the_mlflow_store_is_created_whole(tmp_path):
    """kill -9 during the MLflow store's schema migrations left a half-migrated mlflow.db that
    no later run could open (found by tools/kill_trials.py)."""
    from rs_pipeline.defs.mlflow_resource import create_store_atomically

    db = tmp_path / "mlflow.db"
    stale = tmp_path / "mlflow.db.tmp-dead0000"
    stale.write_bytes(b"half-migrated")
    create_store_atomically(db)
    assert db.exists() and not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]
    exp = mlflow.MlflowClient(f"sqlite:///{db}").create_experiment("x")
    assert mlflow.MlflowClient(f"sqlite:///{db}").get_experiment(exp).name == "x"
