"""The round's candidate checkpoint: the sampling policy fine-tuned on the SFT set."""


import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.metadata import track
from rs_pipeline.defs.mlflow_resource import POLICY_MODEL, MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.ids import table_version
from rs_pipeline.modeling import load_policy
from rs_pipeline.training import train_on_completions

ROUND = "round"


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work")
def policy_checkpoint(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                      mlflow: MlflowResource, sft_dataset: pa.Table,
                      sampling_policy: dict) -> dg.Output[dict]:
    """SFT from the champion (loss on completion tokens only, budget in epochs)."""
    cfg, key = pipeline.settings, context.partition_key
    model, tok = load_policy(sampling_policy["path"])
    metrics = train_on_completions(
        model, tok, sft_dataset.column("prompt").to_pylist(),
        sft_dataset.column("completion").to_pylist(), lr=cfg.sft.learning_rate,
        batch_size=cfg.sft.batch_size, seed=cfg.seed, epochs=cfg.sft.epochs)
    sft_version = table_version(sft_dataset)
    record = pipeline.checkpoints.save(
        model, tok, "policies", "pol", round=key, parent_policy_id=sampling_policy["id"],
        sft_dataset_version=sft_version, sft_rows=sft_dataset.num_rows,
        train_loss=metrics["train_loss"])
    version = mlflow.log_checkpoint(key, record, POLICY_MODEL, context.run_id)
    meta = track(context, mlflow, key, {"sft/train_loss": metrics["train_loss"],
                                        "sft/steps": metrics["steps"],
                                        "sft/seconds": metrics["seconds"]})
    record = {**record, "policy_id": record["id"], "mlflow_version": version}
    return dg.Output(record, data_version=dg.DataVersion(record["id"]), metadata={
        **meta, "policy_id": record["id"], "parent_policy_id": sampling_policy["id"],
        "sft_dataset_version": sft_version, "rs-policy version": version})
