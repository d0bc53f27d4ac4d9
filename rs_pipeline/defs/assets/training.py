"""The round's candidate checkpoint: the sampling policy fine-tuned on the SFT set."""

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.metadata import output
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import run_step
from rs_pipeline.records import ChampionChoice, PolicyCheckpoint
from rs_pipeline.steps import training

ROUND = "round"


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work")
def policy_checkpoint(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                      mlflow: MlflowResource, sft_dataset: pa.Table,
                      sampling_policy: ChampionChoice) -> dg.Output[PolicyCheckpoint]:
    """SFT from the champion (loss on completion tokens only, budget in epochs)."""
    key, champion = context.partition_key, sampling_policy.checkpoint
    record, metrics, reused = run_step(
        context, pipeline, "policy_checkpoint", {"sft": sft_dataset, "champion": champion},
        lambda r: training.train_candidate(pipeline.ctx, sft_dataset, champion, key, r))
    record = mlflow.registered(key, record, context.run_id)
    return output(context, mlflow, record, metrics, policy_id=record.id, reused=reused,
                  parent_policy_id=record.parent_id,
                  sft_dataset_version=record.sft_dataset_version,
                  **{"rs-policy version": record.mlflow_version})
