"""Round assets that sample: the round's prompts, the policy it samples from, the generations."""

import functools

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.fanout import MODEL_POOL, PART_IO, part_ops, parts_summary, run_part
from rs_pipeline.defs.history import champion_before, preference_before
from rs_pipeline.defs.metadata import output
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import run_step
from rs_pipeline.imports import lazy_module
from rs_pipeline.records import ChampionChoice

sampling = lazy_module("rs_pipeline.steps.sampling")

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


def _generation_work(context, pipeline: PipelineResource, round_prompts: pa.Table,
                     sampling_policy: ChampionChoice):
    """(inputs that identify the work, keyword arguments of ``sampling.generations``)."""
    ctx, key = pipeline.ctx, context.partition_key
    inputs, extra = {"prompts": round_prompts, "policy": sampling_policy.checkpoint}, {}
    if ctx.settings.generation.waves:
        extra["scorer"] = inputs["stop_model"] = preference_before(context.instance, ctx.store,
                                                                   key)
    return inputs, extra


@dg.op(pool=MODEL_POOL, config_schema={"part": int}, out=dg.Out(io_manager_key=PART_IO))
def generations_part(context: dg.OpExecutionContext, pipeline: PipelineResource,
                     round_prompts: pa.Table, sampling_policy: ChampionChoice) -> dict:
    """One part of the round's sampling: every ``scale.shards``-th shard of prompts."""
    inputs, extra = _generation_work(context, pipeline, round_prompts, sampling_policy)
    return run_part(context, pipeline, "generations", inputs, lambda r, p: (
        sampling.generations(pipeline.ctx, round_prompts, sampling_policy.checkpoint,
                             context.partition_key, r, part=p, **extra)))


@dg.op(pool=MODEL_POOL, ins={"after": dg.In(dg.Nothing)})
def generations_merge(context: dg.OpExecutionContext, pipeline: PipelineResource,
                      mlflow: MlflowResource, round_prompts: pa.Table,
                      sampling_policy: ChampionChoice, parts: list[dict]) -> dg.Output[pa.Table]:
    """The round's generations: the parts' shards read back in order (a shard no part wrote,
    and adaptive waves, are sampled here)."""
    ctx, policy, key = pipeline.ctx, sampling_policy.checkpoint, context.partition_key
    inputs, extra = _generation_work(context, pipeline, round_prompts, sampling_policy)
    table, metrics, reused = run_step(
        context, pipeline, "generations", inputs,
        lambda r: sampling.generations(ctx, round_prompts, policy, key, r, **extra))
    if not reused:
        metrics = {**metrics, **_with_parts(metrics, parts)}
    meta = {"stop_reward_model_id": extra["scorer"].id} if extra else {}
    return output(context, mlflow, table, metrics, reused=reused, **meta)


def _with_parts(metrics: dict, parts: list[dict]) -> dict:
    """Sampling seconds and throughput over the parts and the merge together."""
    seconds = metrics.get("gen/seconds", 0.0) + sum(p.get("gen/seconds", 0.0) for p in parts)
    tokens = (metrics.get("gen/sampled_tokens", 0)
              + sum(p.get("gen/sampled_tokens", 0) for p in parts))
    return {"gen/seconds": seconds, "gen/sampled_tokens": tokens,
            "gen/tokens_per_s": tokens / seconds if seconds else None,
            **parts_summary(parts, "gen/seconds")}


@functools.cache
def generations_asset(shards: int) -> dg.AssetsDefinition:
    """The ``generations`` asset fanned out over ``shards`` parts (``defs.fanout``)."""
    parts = part_ops(generations_part, shards)

    @dg.graph_asset(partitions_def=ROUNDS, group_name=ROUND,
                    ins={"round_prompts": dg.AssetIn(), "sampling_policy": dg.AssetIn(),
                         "seed_preference_model": dg.AssetIn(dagster_type=dg.Nothing)})
    def generations(round_prompts, sampling_policy, seed_preference_model):
        """N samples per prompt from the sampling policy, by the engine ``generation.engine``
        names (``transformers`` in process, or a ``vllm`` worker stopped when the step ends),
        in ``scale.shards`` parallel parts (``defs.fanout``). With ``generation.waves``,
        adaptive best-of-N scored by the round's incoming preference model (the previous
        round's, else the seed one)."""
        done = [p(round_prompts, sampling_policy) for p in parts]
        return generations_merge(round_prompts, sampling_policy, done,
                                 after=seed_preference_model)

    return generations
