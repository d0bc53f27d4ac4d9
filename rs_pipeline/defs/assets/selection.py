"""Round assets that select: the SFT set (best per prompt) and DPO pairs (best vs worst)."""


import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.metadata import distinct_ids, table_metadata, track
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.ids import table_version
from rs_pipeline.round_steps import build_dpo_pairs, build_sft_dataset

ROUND = "round"


@dg.asset(partitions_def=ROUNDS, group_name=ROUND)
def sft_dataset(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                mlflow: MlflowResource, scores: pa.Table) -> dg.Output[pa.Table]:
    """The best completion per prompt by the configured selector (``prompt``/``completion``)."""
    table, stats = build_sft_dataset(scores, pipeline.settings.selection.threshold)
    version = table_version(table)
    meta = track(context, mlflow, context.partition_key, {
        "select/kept": stats["kept"], "select/prompts": stats["prompts"],
        "select/dropped_below_threshold": stats["dropped_below_threshold"],
        "select/duplicate_completions": stats["duplicate_completions"],
        "select/kept_precision": stats.get("kept_precision")})
    return dg.Output(table, data_version=dg.DataVersion(version),
                     metadata={**table_metadata(table), **meta, "sft_dataset_version": version,
                               **distinct_ids(scores, "policy_id", "reward_model_id")})


@dg.asset(partitions_def=ROUNDS, group_name=ROUND)
def dpo_pairs(context: dg.AssetExecutionContext, pipeline: PipelineResource,
              mlflow: MlflowResource, scores: pa.Table) -> dg.Output[pa.Table]:
    """Best vs worst distinct completion per prompt (``prompt``/``chosen``/``rejected``)."""
    table = build_dpo_pairs(scores, pipeline.settings.selection.dpo_min_margin)
    meta = track(context, mlflow, context.partition_key, {"select/dpo_pairs": table.num_rows})
    return dg.Output(table, data_version=dg.DataVersion(table_version(table)),
                     metadata={**table_metadata(table), **meta,
                               **distinct_ids(scores, "policy_id", "reward_model_id")})
