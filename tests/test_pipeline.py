"""Two rounds end to end through ``dagster.materialize`` on a temp DAGSTER_HOME."""

import json
from pathlib import Path

import dagster as dg
import mlflow
import pyarrow.parquet as pq
import pytest
import yaml

from rs_pipeline.config import merge
from rs_pipeline.defs.partitions import existing_rounds
from rs_pipeline.defs.runner import run_bootstrap, run_round
from rs_pipeline.history import round_row
from rs_pipeline.ids import table_version
from rs_pipeline.modeling import saved_heads
from rs_pipeline.storage import AssetStore
from tests.conftest import pointing_at

ROUND_TABLES = ["round_prompts", "generations", "preference_labels", "scores", "sft_dataset",
                "dpo_pairs"]


@pytest.fixture(scope="module")
def two_rounds(two_promoted_rounds):
    """Bootstrap + two promoted rounds (built once per session); tests read what they left."""
    home, results = two_promoted_rounds
    with pointing_at(home):
        yield home, dg.DagsterInstance.get(), results


def _store(home: Path) -> AssetStore:
    return AssetStore(str(home / "assets"))


def _client(home: Path):
    return mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def test_two_rounds_write_files_rows_and_lineage(two_rounds):
    home, instance, results = two_rounds
    assert [k for k, _ in results] == ["r0001", "r0002"]
    assert existing_rounds(instance) == ["r0001", "r0002"]
    storage = home / "assets"
    for key, _ in results:
        for name in ROUND_TABLES:
            assert (storage / name / f"{key}.parquet").exists(), (name, key)
        gens = pq.read_table(storage / "generations" / f"{key}.parquet")
        assert gens.num_rows == 96 * 4  # round_size x n
        sampled = _store(home).read_record("sampling_policy", key).checkpoint
        assert set(gens.column("policy_id").to_pylist()) == {sampled.id}
        scores = pq.read_table(storage / "scores" / f"{key}.parquet")
        rm = json.loads((storage / "preference_model" / f"{key}.json").read_text())
        assert set(scores.column("reward_model_id").to_pylist()) == {rm["id"]}
        sft = pq.read_table(storage / "sft_dataset" / f"{key}.parquet")
        assert 0 < sft.num_rows <= 96
        ckpt = _store(home).read_record("policy_checkpoint", key)
        assert ckpt.sft_dataset_version == table_version(sft) and ckpt.sft_rows == sft.num_rows
        assert ckpt.parent_id == sampled.id and ckpt.round == key
        assert ckpt.path == f"checkpoints/policies/{ckpt.id}"  # relative to the storage base
        assert (storage / ckpt.path / "model.safetensors").exists()
        labels = pq.read_table(storage / "preference_labels" / f"{key}.parquet").to_pydict()
        assert all(a != b for a, b in zip(labels["completion_a"], labels["completion_b"]))
    # no held-out prompt was ever trained on
    held = set(pq.read_table(storage / "eval_prompts.parquet").column("prompt_id").to_pylist())
    for key, _ in results:
        trained = pq.read_table(storage / "sft_dataset" / f"{key}.parquet")
        assert held.isdisjoint(trained.column("prompt_id").to_pylist())
    # both rounds were promoted; round 2 samples from round 1's candidate, its RM refreshes r1's
    store = _store(home)
    rows = [round_row(store, k) for k in ("r0001", "r0002")]
    assert [r.state for r in rows] == ["promoted", "promoted"]
    s2 = store.read_record("sampling_policy", "r0002")
    assert (s2.source, s2.source_round, s2.checkpoint.id) == ("promotion", "r0001", rows[0].policy_id)
    assert store.read_record("promotion", "r0002").previous_champion_id == rows[0].policy_id
    rm1 = store.read_record("preference_model", "r0001")
    rm2 = store.read_record("preference_model", "r0002")
    assert rm2.parent_id == rm1.id and rm2.replay_pairs > 0


def test_mlflow_holds_one_run_per_round_registered_models_and_champion(two_rounds):
    home, _, results = two_rounds
    client = _client(home)
    exp = client.get_experiment_by_name("rs_pipeline")
    for key, _ in results:
        runs = client.search_runs([exp.experiment_id], f"tags.round = '{key}'")
        assert len(runs) == 1
        m = runs[0].data.metrics
        for name in ("eval/greedy_acc", "eval/sample_acc", "eval/pass_at_n", "eval/mean_reward",
                     "select/kept", "pref/pair_acc", "gen/tokens_per_s", "sft/train_loss",
                     "gate/greedy_acc", "gate/promoted"):
            assert name in m, (key, name)
        assert m["gate/promoted"] in (0.0, 1.0)
        assert runs[0].data.tags["dagster_run_id"]
    versions = client.search_model_versions("name = 'rs-policy'")
    policy_tags = {v.tags["model_id"] for v in versions}
    for v in versions:  # a version is the checkpoint folder itself, not a second copy
        assert v.source.startswith("file://") and str(home / "assets" / "checkpoints") in v.source
    storage = home / "assets"
    for key, _ in results:
        for name in ("generations", "scores", "sft_dataset"):
            ids = set(pq.read_table(storage / name / f"{key}.parquet").column("policy_id")
                      .to_pylist())
            assert ids <= policy_tags, (name, key)
    assert len(client.search_model_versions("name = 'rs-preference'")) == 3  # seed + 2 rounds
    champion = client.get_model_version_by_alias("rs-policy", "champion")
    assert champion.tags["model_id"] == _store(home).read_record("promotion", "r0002").checkpoint.id
    # MLflow's own charts: every round's metrics also on the history run, one step per round
    history = client.search_runs([exp.experiment_id], "tags.`rs_pipeline/history` = '1'")[0]
    steps = [m.step for m in client.get_metric_history(history.info.run_id, "eval/greedy_acc")]
    assert steps == [1, 2]
    assert all(r.info.status == "FINISHED" for r in client.search_runs(
        [exp.experiment_id], "tags.round LIKE 'r%'"))


def test_refused_round_keeps_the_champion_and_its_reason(tiny_home):
    cfg = yaml.safe_load((tiny_home / "rs_pipeline.yaml").read_text())
    cfg["gate"] = {**cfg["gate"], "tolerance": -2.0}  # must beat the champion by 2.0: impossible
    (tiny_home / "rs_pipeline.yaml").write_text(yaml.safe_dump(cfg))
    instance = dg.DagsterInstance.get()
    assert run_bootstrap(instance).success
    key, result = run_round(instance)
    assert not result.success
    store = _store(tiny_home)
    ev = store.read_record("round_eval", key)
    assert ev.decision.promoted is False and "regression" in ev.decision.reason
    assert round_row(store, key).state == "refused"
    assert not store.exists("promotion", key, "json")
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()
              if not e.check_name.startswith("monitor_")}  # monitors: tests/test_monitors.py
    assert checks == {"no_regression_vs_champion": False, "no_reward_hacking": True,
                      "preference_model_pair_accuracy": True}
    assert ev.decision.judge == "verifier" and ev.decision.pair_acc_floor.bar == 0.0
    key2, _ = run_round(instance)
    s2 = store.read_record("sampling_policy", key2)
    base = store.read_record("base_policy")
    assert s2.checkpoint.id == base.id and s2.source == "base_policy"
    client = _client(tiny_home)
    run = client.search_runs([client.get_experiment_by_name("rs_pipeline").experiment_id],
                             f"tags.round = '{key}'")[0]
    assert run.data.metrics["gate/promoted"] == 0.0
    assert client.get_model_version_by_alias("rs-policy", "champion").tags["model_id"] == base.id


def test_same_config_reuses_the_base_policy_and_reproduces_rows(tiny_home):
    instance = dg.DagsterInstance.get()
    run_bootstrap(instance)
    store = _store(tiny_home)
    first = store.read_record("base_policy")
    key, _ = run_round(instance)
    gens1 = store.read_table("generations", key)
    run_bootstrap(instance)
    assert store.read_record("base_policy").id == first.id
    events = instance.fetch_materializations(dg.AssetKey("base_policy"), limit=5).records
    assert events[0].asset_materialization.metadata["reused"].value is True
    run_round(instance, key)  # re-materialize the same round
    assert gens1.equals(store.read_table("generations", key))


def test_lineage_agrees_with_rows_event_log_and_mlflow(two_rounds, monkeypatch, capsys):
    import random

    from rs_pipeline.cli import main
    from rs_pipeline.defs.lineage import Lineage
    from rs_pipeline.defs.mlflow_resource import MlflowResource
    from rs_pipeline.defs.resources import PipelineResource

    home, instance, results = two_rounds
    storage = home / "assets"
    pipeline = PipelineResource()
    lin = Lineage(instance, pipeline.ctx.store, MlflowResource(pipeline=pipeline))
    client = _client(home)
    rng = random.Random(7)
    base = _store(home).read_record("base_policy")
    for key, _ in results:
        scores = pq.read_table(storage / "scores" / f"{key}.parquet")
        row = scores.slice(rng.randrange(scores.num_rows), 1).to_pylist()[0]
        ans = lin.data_lineage("scores", key, prompt_id=row["prompt_id"])
        assert ans["consistent"], ans["sources"]
        assert ans["policy_id"] == row["policy_id"] and ans["reward_model_id"] == row["reward_model_id"]
        tag = client.get_model_version("rs-policy", ans["policy_mlflow_version"]).tags["model_id"]
        assert tag == row["policy_id"]
        assert ans["policy_ancestors"][-1:] == [base.id] or row["policy_id"] == base.id
        one = lin.data_lineage("generations", key, generation_id=row["generation_id"])
        assert one["rows"] == 1 and one["policy_id"] == row["policy_id"]
        pol = lin.policy_lineage(key)
        sft = pq.read_table(storage / "sft_dataset" / f"{key}.parquet")
        assert pol["consistent"], pol["sources"]
        assert pol["sft_dataset_version"] == table_version(sft)
        assert pol["sources"]["dagster"]["sft_dataset_data_version"] == table_version(sft)
        assert pol["ancestors"][-1] == base.id and pol["round"] == key
    base_answer = lin.policy_lineage(base.id)
    assert "r0001" in base_answer["sampled_by_rounds"] and base_answer["ancestors"] == []
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["lineage", "policy", "r0002", "--json", "--home", str(home)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"policy_id", "parent_policy_id", "round", "sft_dataset_version"} <= set(out)
    assert main(["lineage", "data", "sft_dataset", "--round", "r0001", "--home", str(home)]) == 0
    assert "reward_model_id" in capsys.readouterr().out
    assert main(["lineage", "data", "sft_dataset", "--round", "r0009", "--home", str(home)]) == 2


@pytest.mark.slow
def test_rounds_notebook_executes_and_draws_every_round(two_rounds, monkeypatch, tmp_path):
    import shutil

    import nbformat
    from nbclient import NotebookClient

    home, _, results = two_rounds
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "notebook"
    monkeypatch.setenv("RS_HOME", str(home))
    monkeypatch.setenv("RS_NOTEBOOK_OUT", str(out))
    curve = tmp_path / "continuous.csv"  # as benchmarks/continuous.py writes it
    curve.write_text("arm,round,round_tokens,tokens,state,champion_greedy_acc\n"
                     "default,start,0,0,,0.3\ndefault,r0001,900,900,promoted,0.8\n"
                     "continuous,start,0,0,,0.3\ncontinuous,r0001,110,110,refused,0.3\n"
                     "continuous,r0002,120,230,promoted,0.6\n")
    monkeypatch.setenv("RS_CONTINUOUS_CURVE", str(curve))
    nb = nbformat.read(root / "notebooks" / "rounds.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == [k for k, _ in results]
    assert summary["figures"] == ["accuracy_per_round.png", "continuous_curve.png",
                                  "kept_per_round.png", "lineage_chain.png",
                                  "reward_distributions.png"]
    assert all((out / f).stat().st_size > 5000 for f in summary["figures"])
    table_html = nb.cells[2].outputs[0]["data"]["text/html"]
    assert all(k in table_html for k, _ in results)
    images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == 5  # the figures show inline, one per picture cell
    artifacts = root / "test-artifacts" / "notebook"
    shutil.copytree(out, artifacts, dirs_exist_ok=True)


def test_an_inconsistent_lineage_answer_exits_4(two_rounds, monkeypatch, capsys):
    from rs_pipeline.cli import main

    home, _, _ = two_rounds
    client = _client(home)
    ckpt = _store(home).read_record("policy_checkpoint", "r0001")
    version = client.search_model_versions(f"name = 'rs-policy' and tag.model_id = '{ckpt.id}'")[0]
    client.set_model_version_tag("rs-policy", version.version, "parent_id", "pol-tampered")
    try:
        assert main(["lineage", "policy", "r0001", "--json", "--home", str(home)]) == 4
        out = json.loads(capsys.readouterr().out)
        assert out["consistent"] is False
        assert out["sources"]["mlflow"]["parent_policy_id"] == "pol-tampered"
        assert out["sources"]["record"]["parent_policy_id"] == ckpt.parent_id
    finally:
        client.set_model_version_tag("rs-policy", version.version, "parent_id", ckpt.parent_id)
    assert main(["lineage", "policy", "r0001", "--home", str(home)]) == 0


def test_a_home_copied_elsewhere_answers_lineage_and_continues(two_rounds, tmp_path, monkeypatch):
    import shutil

    from rs_pipeline.cli import main

    old, _, _ = two_rounds
    new = tmp_path / "moved" / "home"
    shutil.copytree(old, new)
    monkeypatch.setenv("DAGSTER_HOME", str(new))
    assert main(["lineage", "policy", "r0002", "--home", str(new)]) == 0
    instance = dg.DagsterInstance.get()
    key, result = run_round(instance)
    assert key == "r0003" and result.success
    store = _store(new)
    assert store.read_record("sampling_policy", key).checkpoint.id == \
        store.read_record("promotion", "r0002").checkpoint.id
    ckpt = store.read_record("policy_checkpoint", key)
    assert (new / "assets" / ckpt.path / "model.safetensors").exists()
    assert not (old / "assets" / "policy_checkpoint" / "r0003.json").exists()


@pytest.mark.slow
def test_a_round_with_an_ensemble_and_active_labels_records_the_spread(tmp_path, monkeypatch):
    """Three preference heads, active pairs under the label budget, conservative selection:
    one round through Dagster; the spread is in the scores, the metadata and MLflow."""
    from tests.conftest import PROMOTE_ALL, make_home

    settings = merge(PROMOTE_ALL, {"preference": {"ensemble_heads": 3, "pair_strategy": "active"},
                                   "selection": {"uncertainty_penalty": 0.5}})
    home = make_home(tmp_path / "home", monkeypatch, settings)
    instance = dg.DagsterInstance.get()
    assert run_bootstrap(instance).success
    key, result = run_round(instance)
    assert result.success
    store = _store(home)
    scores = store.read_table("scores", key)
    spread = scores.column("reward_spread").to_pylist()
    assert min(spread) > 0
    sel = scores.column("selection_score").to_pylist()
    reward = scores.column("reward").to_pylist()
    assert sel == pytest.approx([r - 0.5 * s for r, s in zip(reward, spread)])
    labels = store.read_table("preference_labels", key)
    assert labels.num_rows == 80  # the budget, spent
    distinct = {}
    for pid, comp in zip(*(scores.column(c).to_pylist() for c in ("prompt_id", "completion"))):
        distinct.setdefault(pid, set()).add(comp)
    pairable = sum(len(c) > 1 for c in distinct.values())
    assert len(set(labels.column("prompt_id").to_pylist())) == min(80, pairable)  # spread out
    rm = store.read_record("preference_model", key)
    assert saved_heads(home / "assets" / rm.path) == 3
    mean_spread = sum(spread) / len(spread)
    meta = instance.get_latest_materialization_event(dg.AssetKey("scores")).asset_materialization
    assert meta.metadata["score/mean_spread"].value == pytest.approx(mean_spread, abs=1e-5)
    run = _client(home).search_runs(
        [_client(home).get_experiment_by_name("rs_pipeline").experiment_id],
        f"tags.round = '{key}'")[0]
    assert run.data.metrics["score/mean_spread"] == pytest.approx(mean_spread, abs=1e-5)
    assert run.data.metrics["select/kept_mean_spread"] > 0
