"""Unpartitioned assets: prompt sets, the round-0 policy, seed preferences and the first
preference model."""

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.metadata import output
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import run_step
from rs_pipeline.imports import lazy_module
from rs_pipeline.records import PolicyCheckpoint, PreferenceCheckpoint

bootstrap = lazy_module("rs_pipeline.steps.bootstrap")
judging = lazy_module("rs_pipeline.steps.judging")

BOOTSTRAP = "bootstrap"


@dg.multi_asset(
    outs={
        "prompt_pool": dg.AssetOut(description="Validated, de-duplicated training prompts."),
        "eval_prompts": dg.AssetOut(description="Held-out eval and gate prompts (never trained on)."),
    },
    group_name=BOOTSTRAP,
)
def prompt_sets(context: dg.AssetExecutionContext, pipeline: PipelineResource):
    pool, held, stats = bootstrap.prompt_sets(pipeline.ctx)
    yield output(context, None, pool, output_name="prompt_pool", **stats)
    yield output(context, None, held, output_name="eval_prompts")


@dg.asset(group_name=BOOTSTRAP, pool="model_work")
def base_policy(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                mlflow: MlflowResource, prompt_pool: pa.Table) -> dg.Output[PolicyCheckpoint]:
    """The round-0 policy: your own checkpoint folder, or the demo's tiny GPT-2 pretrained on
    the task's bugged data. The same config does no new work."""
    record, metrics, reused = run_step(
        context, pipeline, "base_policy", {"prompt_pool": prompt_pool},
        lambda r: bootstrap.base_policy(pipeline.ctx, prompt_pool, r))
    record = mlflow.registered(BOOTSTRAP, record, context.run_id)
    if mlflow.champion() is None:
        mlflow.set_champion(record.mlflow_version)
    return output(context, mlflow, record, metrics, policy_id=record.id,
                  reused=reused or bool(metrics.get("base/reused")),
                  **{"rs-policy version": record.mlflow_version})


@dg.asset(group_name=BOOTSTRAP)
def seed_preferences(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     prompt_pool: pa.Table) -> dg.Output[pa.Table]:
    """Labelled pairs for the first preference model: a judgement file, or synthetic pairs
    (right answer, systematic bug, random corruption) labelled by the annotator."""
    table, stats = bootstrap.seed_preferences(pipeline.ctx, prompt_pool)
    return output(context, None, table, **stats)


@dg.asset(group_name=BOOTSTRAP, pool="model_work")
def seed_preference_model(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                          mlflow: MlflowResource, base_policy: PolicyCheckpoint,
                          seed_preferences: pa.Table) -> dg.Output[PreferenceCheckpoint]:
    """The first reward model: the policy's body plus a one-output head, BT on seed pairs."""
    record, metrics, reused = run_step(
        context, pipeline, "seed_preference_model",
        {"base_policy": base_policy, "seed_preferences": seed_preferences},
        lambda r: judging.train_seed_preference(pipeline.ctx, base_policy, seed_preferences, r))
    record = mlflow.registered(BOOTSTRAP, record, context.run_id)
    output_ = output(context, mlflow, record, metrics, reward_model_id=record.id, reused=reused)
    mlflow.finish_round(BOOTSTRAP, context.run_id)
    return output_
