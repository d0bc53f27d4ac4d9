"""Round assets that sample: the round's prompts, the policy it samples from, the generations."""

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.history import champion_before, preference_before
from rs_pipeline.defs.metadata import output
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import run_step
from rs_pipeline.records import ChampionChoice
from rs_pipeline.steps import sampling

ROUND = "round"


@dg.asset(partitions_def=ROUNDS, group_name=ROUND)
def round_prompts(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                  prompt_pool: pa.Table) -> dg.Output[pa.Table]:
    """This round's prompts: a seeded draw from the training pool."""
    return output(context, None, sampling.round_prompts(pipeline.ctx, prompt_pool,
                                                        context.partition_key))


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, deps=["base_policy"])
def sampling_policy(context: dg.AssetExecutionContext,
                    pipeline: PipelineResource) -> dg.Output[ChampionChoice]:
    """The policy this round samples from and fine-tunes: the latest promoted checkpoint before
    this round, else the base policy. Resolved once per round and recorded."""
    choice = champion_before(context.instance, pipeline.ctx.store, context.partition_key)
    return dg.Output(choice, data_version=dg.DataVersion(choice.checkpoint.id),
                     metadata={"policy_id": choice.checkpoint.id, "source": choice.source,
                               "source_round": choice.source_round or "-"})


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work",
          deps=["seed_preference_model"])
def generations(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                mlflow: MlflowResource, round_prompts: pa.Table,
                sampling_policy: ChampionChoice) -> dg.Output[pa.Table]:
    """N samples per prompt from the sampling policy, by the engine ``generation.engine`` names
    (``transformers`` in process, or a ``vllm`` worker stopped when the step ends). With
    ``generation.waves``, adaptive best-of-N scored by the round's incoming preference model
    (the previous round's, else the seed one)."""
    ctx, policy, key = pipeline.ctx, sampling_policy.checkpoint, context.partition_key
    inputs, extra = {"prompts": round_prompts, "policy": policy}, {}
    if ctx.settings.generation.waves:
        extra["scorer"] = inputs["stop_model"] = preference_before(context.instance, ctx.store,
                                                                   key)
    table, metrics, reused = run_step(
        context, pipeline, "generations", inputs,
        lambda r: sampling.generations(ctx, round_prompts, policy, key, r, **extra))
    meta = {"stop_reward_model_id": extra["scorer"].id} if extra else {}
    return output(context, mlflow, table, metrics, reused=reused, **meta)
