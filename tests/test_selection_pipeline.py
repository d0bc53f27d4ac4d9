"""Two rounds through Dagster with the best-ever pool and a percentile: round 2's kept set holds
round 1's rows, rescored by round 2's preference model, with their own lineage."""

import dagster as dg
import mlflow
import pytest

from rs_pipeline.defs.runner import failure_messages, run_bootstrap, run_round
from rs_pipeline.storage import AssetStore
from tests.conftest import PROMOTE_ALL, make_home


def _meta(instance, asset: str, key: str) -> dict:
    flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key])
    record = instance.fetch_materializations(flt, limit=1).records[0]
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


@pytest.mark.slow
def test_best_ever_pool_and_percentile_over_two_rounds(tmp_path, monkeypatch):
    settings = {**PROMOTE_ALL, "selection": {**PROMOTE_ALL["selection"], "best_ever": True,
                                             "percentile": 50}}
    home = make_home(tmp_path / "home", monkeypatch, settings)
    instance = dg.DagsterInstance.get()
    boot = run_bootstrap(instance)
    assert boot.success, failure_messages(instance, boot)
    for _ in range(2):
        key, result = run_round(instance)
        assert result.success, failure_messages(instance, result)
    store = AssetStore(str(home / "assets"))
    m1, m2 = _meta(instance, "sft_dataset", "r0001"), _meta(instance, "sft_dataset", "r0002")
    assert m1["select/from_pool"] == 0 and m1["pool_rounds"] == 0
    assert m1["select/dropped_by_percentile"] >= 96 // 2 - 1 and m1["select/percentile"] == 50
    assert m2["pool_rounds"] == 1 and m2["select/from_pool"] > 0
    assert m2["select/dropped_by_percentile"] > 0
    # the same figures went to the round's MLflow run
    run = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_run(m2["mlflow_run_id"])
    assert run.data.metrics["select/from_pool"] == m2["select/from_pool"]
    assert "select/mean_length" in run.data.metrics and "select/kept_precision" in run.data.metrics

    sft1 = store.read_table("sft_dataset", "r0001").to_pandas()
    sft2 = store.read_table("sft_dataset", "r0002").to_pandas()
    gens = {k: store.read_table("generations", k).to_pandas().set_index("generation_id")
            for k in ("r0001", "r0002")}
    rm2 = store.read_record("preference_model", "r0002")
    pooled, fresh = sft2[sft2["round"] == "r0001"], sft2[sft2["round"] == "r0002"]
    assert len(pooled) == m2["select/from_pool"] and len(pooled) + len(fresh) == len(sft2)
    assert sft2["prompt_id"].is_unique and set(sft2["reward_model_id"]) == {rm2.id}
    for part, key in ((pooled, "r0001"), (fresh, "r0002")):
        origin = gens[key].loc[part["generation_id"]]
        assert (origin["completion"].values == part["completion"].values).all()
        assert (origin["policy_id"].values == part["policy_id"].values).all()
        assert (origin["prompt_id"].values == part["prompt_id"].values).all()
    # a pooled row is a row round 1 kept, rescored (round 1 scored it with its own model)
    kept1 = sft1.set_index("generation_id")
    assert set(pooled["generation_id"]) <= set(kept1.index)
    assert set(kept1.loc[pooled["generation_id"], "reward_model_id"]) != {rm2.id}
