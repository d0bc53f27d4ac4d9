"""Two rounds end to end through ``dagster.materialize`` on a temp DAGSTER_HOME."""

import json
from pathlib import Path

import dagster as dg
import mlflow
import pyarrow.parquet as pq
import pytest
import yaml

from rs_pipeline.defs.partitions import existing_rounds
from rs_pipeline.defs.runner import materialize_bootstrap, materialize_round, round_summary
from rs_pipeline.ids import table_version
from tests.conftest import make_home

ROUND_TABLES = ["round_prompts", "generations", "preference_labels", "scores", "sft_dataset",
                "dpo_pairs"]


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    """Bootstrap + two rounds once; the tests below read what they left."""
    with pytest.MonkeyPatch.context() as mp:
        home = make_home(tmp_path_factory.mktemp("two_rounds") / "home", mp)
        instance = dg.DagsterInstance.get()
        assert materialize_bootstrap(instance).success
        results = [materialize_round(instance) for _ in range(2)]
        assert all(r.success or round_summary(k).get("decision") for k, r in results)
        yield home, instance, results


def _client(home: Path):
    return mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def test_two_rounds_write_files_rows_and_lineage(two_rounds):
    home, instance, results = two_rounds
    assert [k for k, _ in results] == ["r0001", "r0002"]
    assert existing_rounds(instance) == ["r0001", "r0002"]
    storage = home / "storage"
    for key, _ in results:
        for name in ROUND_TABLES:
            assert (storage / name / f"{key}.parquet").exists(), (name, key)
        gens = pq.read_table(storage / "generations" / f"{key}.parquet")
        assert gens.num_rows == 96 * 4  # round_size x n
        sampled = json.loads((storage / "sampling_policy" / f"{key}.json").read_text())
        assert set(gens.column("policy_id").to_pylist()) == {sampled["id"]}
        scores = pq.read_table(storage / "scores" / f"{key}.parquet")
        rm = json.loads((storage / "preference_model" / f"{key}.json").read_text())
        assert set(scores.column("reward_model_id").to_pylist()) == {rm["id"]}
        sft = pq.read_table(storage / "sft_dataset" / f"{key}.parquet")
        assert 0 < sft.num_rows <= 96
        ckpt = json.loads((storage / "policy_checkpoint" / f"{key}.json").read_text())
        assert ckpt["sft_dataset_version"] == table_version(sft)
        assert ckpt["parent_policy_id"] == sampled["id"]
        assert (Path(ckpt["path"]) / "model.safetensors").exists()
        labels = pq.read_table(storage / "preference_labels" / f"{key}.parquet").to_pydict()
        assert all(a != b for a, b in zip(labels["completion_a"], labels["completion_b"]))
    # no held-out prompt was ever trained on
    held = set(pq.read_table(storage / "eval_prompts.parquet").column("prompt_id").to_pylist())
    for key, _ in results:
        trained = pq.read_table(storage / "sft_dataset" / f"{key}.parquet")
        assert held.isdisjoint(trained.column("prompt_id").to_pylist())
    # round 2 samples from round 1's candidate iff round 1 was promoted; its RM refreshes round 1's
    r1 = round_summary("r0001")
    s2 = json.loads((storage / "sampling_policy" / "r0002.json").read_text())
    base = json.loads((storage / "base_policy.json").read_text())
    assert s2["id"] == (r1["policy_id"] if r1["promoted"] else base["id"])
    rm1 = json.loads((storage / "preference_model" / "r0001.json").read_text())
    rm2 = json.loads((storage / "preference_model" / "r0002.json").read_text())
    assert rm2["parent_id"] == rm1["id"] and rm2["replay_pairs"] > 0


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
    policy_tags = {v.tags["policy_id"] for v in client.search_model_versions("name = 'rs-policy'")}
    storage = home / "storage"
    for key, _ in results:
        for name in ("generations", "scores", "sft_dataset"):
            ids = set(pq.read_table(storage / name / f"{key}.parquet").column("policy_id")
                      .to_pylist())
            assert ids <= policy_tags, (name, key)
    assert len(client.search_model_versions("name = 'rs-preference'")) == 3  # seed + 2 rounds
    champion = client.get_model_version_by_alias("rs-policy", "champion")
    promoted = [k for k, _ in results if round_summary(k)["promoted"]]
    expected = (json.loads((storage / "promotion" / f"{promoted[-1]}.json").read_text())
                ["checkpoint"]["id"] if promoted
                else json.loads((storage / "base_policy.json").read_text())["id"])
    assert champion.tags["policy_id"] == expected


def test_refused_round_keeps_the_champion_and_its_reason(tiny_home):
    cfg = yaml.safe_load((tiny_home / "rs_pipeline.yaml").read_text())
    cfg["gate"] = {"tolerance": -2.0}  # the candidate must beat the champion by 2.0: impossible
    (tiny_home / "rs_pipeline.yaml").write_text(yaml.safe_dump(cfg))
    instance = dg.DagsterInstance.get()
    assert materialize_bootstrap(instance).success
    key, result = materialize_round(instance)
    assert not result.success
    storage = tiny_home / "storage"
    ev = json.loads((storage / "round_eval" / f"{key}.json").read_text())
    assert ev["decision"]["promoted"] is False and "regression" in ev["decision"]["reason"]
    assert not (storage / "promotion" / f"{key}.json").exists()
    checks = {e.check_name: e.passed
              for e in result.get_asset_check_evaluations()}
    assert checks == {"no_regression_vs_champion": False, "no_reward_hacking": True}
    key2, _ = materialize_round(instance)
    s2 = json.loads((storage / "sampling_policy" / f"{key2}.json").read_text())
    base = json.loads((storage / "base_policy.json").read_text())
    assert s2["id"] == base["id"] and s2["source"] == "base_policy"
    client = _client(tiny_home)
    run = client.search_runs([client.get_experiment_by_name("rs_pipeline").experiment_id],
                             f"tags.round = '{key}'")[0]
    assert run.data.metrics["gate/promoted"] == 0.0
    assert client.get_model_version_by_alias("rs-policy", "champion").tags["policy_id"] == base["id"]


def test_same_config_reuses_the_base_policy_and_reproduces_rows(tiny_home):
    instance = dg.DagsterInstance.get()
    materialize_bootstrap(instance)
    storage = tiny_home / "storage"
    first = json.loads((storage / "base_policy.json").read_text())
    key, _ = materialize_round(instance)
    gens1 = pq.read_table(storage / "generations" / f"{key}.parquet")
    materialize_bootstrap(instance)
    again = json.loads((storage / "base_policy.json").read_text())
    assert again["id"] == first["id"]
    events = instance.fetch_materializations(dg.AssetKey("base_policy"), limit=5).records
    assert events[0].asset_materialization.metadata["reused"].value is True
    materialize_round(instance, key)  # re-materialize the same round
    gens2 = pq.read_table(storage / "generations" / f"{key}.parquet")
    assert gens1.equals(gens2)


def test_lineage_agrees_with_rows_event_log_and_mlflow(two_rounds, monkeypatch, capsys):
    import random

    from rs_pipeline.cli import main
    from rs_pipeline.defs.lineage import Lineage
    from rs_pipeline.defs.mlflow_resource import MlflowResource
    from rs_pipeline.defs.resources import PipelineResource

    home, instance, results = two_rounds
    storage = home / "storage"
    lin = Lineage(instance, PipelineResource().store, MlflowResource())
    client = _client(home)
    rng = random.Random(7)
    base = json.loads((storage / "base_policy.json").read_text())
    for key, _ in results:
        scores = pq.read_table(storage / "scores" / f"{key}.parquet")
        row = scores.slice(rng.randrange(scores.num_rows), 1).to_pylist()[0]
        ans = lin.data_lineage("scores", key, prompt_id=row["prompt_id"])
        assert ans["consistent"], ans["sources"]
        assert ans["policy_id"] == row["policy_id"] and ans["reward_model_id"] == row["reward_model_id"]
        tag = client.get_model_version("rs-policy", ans["policy_mlflow_version"]).tags["policy_id"]
        assert tag == row["policy_id"]
        assert ans["policy_ancestors"][-1:] == [base["id"]] or row["policy_id"] == base["id"]
        one = lin.data_lineage("generations", key, generation_id=row["generation_id"])
        assert one["rows"] == 1 and one["policy_id"] == row["policy_id"]
        pol = lin.policy_lineage(key)
        sft = pq.read_table(storage / "sft_dataset" / f"{key}.parquet")
        assert pol["consistent"], pol["sources"]
        assert pol["sft_dataset_version"] == table_version(sft)
        assert pol["sources"]["dagster"]["sft_dataset_data_version"] == table_version(sft)
        assert pol["ancestors"][-1] == base["id"] and pol["round"] == key
    base_answer = lin.policy_lineage(base["id"])
    assert "r0001" in base_answer["sampled_by_rounds"] and base_answer["ancestors"] == []
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["lineage", "policy", "r0002", "--json", "--home", str(home)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"policy_id", "parent_policy_id", "round", "sft_dataset_version"} <= set(out)
    assert main(["lineage", "data", "sft_dataset", "--round", "r0001", "--home", str(home)]) == 0
    assert "reward_model_id" in capsys.readouterr().out
    assert main(["lineage", "data", "sft_dataset", "--round", "r0009", "--home", str(home)]) == 2


def test_rounds_notebook_executes_and_draws_every_round(two_rounds, monkeypatch, tmp_path):
    import shutil

    import nbformat
    from nbclient import NotebookClient

    home, _, results = two_rounds
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "notebook"
    monkeypatch.setenv("RS_HOME", str(home))
    monkeypatch.setenv("RS_NOTEBOOK_OUT", str(out))
    nb = nbformat.read(root / "notebooks" / "rounds.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == [k for k, _ in results]
    assert summary["figures"] == ["accuracy_per_round.png", "kept_per_round.png",
                                  "lineage_chain.png", "reward_distributions.png"]
    assert all((out / f).stat().st_size > 5000 for f in summary["figures"])
    table_html = nb.cells[2].outputs[0]["data"]["text/html"]
    assert all(k in table_html for k, _ in results)
    artifacts = root / "test-artifacts" / "notebook"
    shutil.copytree(out, artifacts, dirs_exist_ok=True)
