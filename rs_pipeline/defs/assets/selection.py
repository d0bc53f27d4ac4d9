"""Round assets that select: the SFT set (best per prompt) and DPO pairs (best vs worst)."""

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.history import earlier_sft
from rs_pipeline.defs.metadata import output
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.ids import table_version
from rs_pipeline.imports import lazy_module

selection = lazy_module("rs_pipeline.steps.selection")

ROUND = "round"


@dg.asset(partitions_def=ROUNDS, group_name=ROUND)
def sft_dataset(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                mlflow: MlflowResource, scores: pa.Table) -> dg.Output[pa.Table]:
    """The kept completions by the configured selector and rule (``prompt``/``completion``);
    with ``selection.best_ever``, earlier rounds' kept rows rescored by this round's preference
    model compete too (rows keep their origin round, generation and policy)."""
    ctx, key = pipeline.ctx, context.partition_key
    earlier, reward_model = [], None
    if ctx.settings.selection.best_ever:
        earlier = earlier_sft(context.instance, ctx.store, key)
        reward_model = ctx.store.read_record("preference_model", key)
    table, metrics = selection.sft_dataset(ctx, scores, key, earlier, reward_model)
    return output(context, mlflow, table, metrics, sft_dataset_version=table_version(table),
                  rule=ctx.settings.selection.rule, pool_rounds=len(earlier))


@dg.asset(partitions_def=ROUNDS, group_name=ROUND)
def dpo_pairs(context: dg.AssetExecutionContext, pipeline: PipelineResource,
              mlflow: MlflowResource, scores: pa.Table) -> dg.Output[pa.Table]:
    """Best vs worst distinct completion per prompt (``prompt``/``chosen``/``rejected``)."""
    table, metrics = selection.dpo_dataset(pipeline.ctx, scores)
    return output(context, mlflow, table, metrics)
