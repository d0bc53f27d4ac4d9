"""Round assets that judge: on-policy labelled pairs, the refreshed preference model, scores."""

import functools

import dagster as dg
import pyarrow as pa

from rs_pipeline.annotators import annotator_version
from rs_pipeline.annotators.human import RequestState
from rs_pipeline.defs.fanout import MODEL_POOL, PART_IO, part_ops, parts_summary, run_part
from rs_pipeline.defs.history import earlier_labels, preference_before
from rs_pipeline.defs.labelling import pause
from rs_pipeline.defs.metadata import output, picture
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import run_step
from rs_pipeline.imports import lazy_module
from rs_pipeline.records import PreferenceCheckpoint
from rs_pipeline.report import reward_figure

judging = lazy_module("rs_pipeline.steps.judging")

ROUND = "round"


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work",
          deps=["seed_preference_model"], output_required=False)
def preference_labels(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                      mlflow: MlflowResource, generations: pa.Table):
    """Pairs of distinct completions from this round's samples, labelled by the annotator
    (by default each prompt's first pair is the previous preference model's favourite against
    another completion: labels go where selection will look). With ``annotator.kind: human``
    the pairs are requested from people and, until they answer, the round waits: no output,
    downstream steps skipped, the run tagged as waiting (``defs.labelling``)."""
    ctx, key = pipeline.ctx, context.partition_key
    previous = preference_before(context.instance, ctx.store, key)
    if ctx.settings.annotator.kind == "human":
        table, stats = judging.human_labels(ctx, generations, previous, key)
        if isinstance(table, RequestState):
            pause(context, mlflow, table)
            return
        yield output(context, mlflow, table, _spent(table), **stats)
        return
    table, stats, reused = run_step(
        context, pipeline, "preference_labels",
        {"generations": generations, "previous": previous,
         "annotator": annotator_version(ctx.settings.annotator)},
        lambda r: judging.label_pairs(ctx, generations, previous, key))
    yield output(context, mlflow, table, _spent(table), reused=reused, **stats)


def _spent(labels: pa.Table) -> dict:
    """The round's label budget as MLflow metrics: labels spent and how many were ties."""
    hp = labels.column("hp").to_pylist()
    return {"labels/spent": len(hp), "labels/ties": sum(h == 0.5 for h in hp)}


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work",
          deps=["seed_preference_model"])
def preference_model(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     mlflow: MlflowResource,
                     preference_labels: pa.Table) -> dg.Output[PreferenceCheckpoint]:
    """The previous preference model fine-tuned on this round's pairs plus replayed earlier pairs."""
    ctx, key = pipeline.ctx, context.partition_key
    previous = preference_before(context.instance, ctx.store, key)
    earlier = earlier_labels(context.instance, ctx.store, key)
    record, metrics, reused = run_step(
        context, pipeline, "preference_model",
        {"labels": preference_labels, "previous": previous, "earlier": earlier},
        lambda r: judging.refresh_preference(ctx, preference_labels, previous, earlier, key, r))
    record = mlflow.registered(key, record, context.run_id)
    mlflow.note(key, {"pref/refresh_skipped": record.skipped_reason}, context.run_id)
    return output(context, mlflow, record, metrics, reward_model_id=record.id,
                  parent_reward_model_id=previous.id, reused=reused,
                  refresh_skipped=record.skipped_reason)


def _score_inputs(generations: pa.Table, preference_model: PreferenceCheckpoint) -> dict:
    return {"generations": generations, "reward_model": preference_model}


@dg.op(pool=MODEL_POOL, config_schema={"part": int}, out=dg.Out(io_manager_key=PART_IO))
def scores_part(context: dg.OpExecutionContext, pipeline: PipelineResource,
                generations: pa.Table, preference_model: PreferenceCheckpoint) -> dict:
    """One part of the round's scoring: every ``scale.shards``-th shard of prompts."""
    return run_part(context, pipeline, "scores", _score_inputs(generations, preference_model),
                    lambda r, p: judging.score_generations(pipeline.ctx, generations,
                                                           preference_model, r, part=p))


@dg.op(pool=MODEL_POOL)
def scores_merge(context: dg.OpExecutionContext, pipeline: PipelineResource,
                 mlflow: MlflowResource, generations: pa.Table,
                 preference_model: PreferenceCheckpoint, parts: list[dict]) -> dg.Output[pa.Table]:
    """The parts' shards of scores read back in order (a shard no part wrote is scored here)."""
    table, metrics, reused = run_step(
        context, pipeline, "scores", _score_inputs(generations, preference_model),
        lambda r: judging.score_generations(pipeline.ctx, generations, preference_model, r))
    if not reused:
        metrics = {**metrics, **parts_summary(parts)}
    rewards, verdicts = (table.column(c).to_pylist() for c in ("reward", "verifier_score"))
    groups = ({"all": rewards} if None in verdicts else
              {"verifier: right": [r for r, v in zip(rewards, verdicts) if v > 0],
               "verifier: wrong": [r for r, v in zip(rewards, verdicts) if v <= 0]})
    return output(context, mlflow, table, metrics, reused=reused,
                  reward_distribution=picture(reward_figure(groups), "rewards"))


@functools.cache
def scores_asset(shards: int) -> dg.AssetsDefinition:
    """The ``scores`` asset fanned out over ``shards`` parts (``defs.fanout``)."""
    parts = part_ops(scores_part, shards)

    @dg.graph_asset(partitions_def=ROUNDS, group_name=ROUND)
    def scores(generations, preference_model):
        """Every generation's reward under this round's preference model, and its selection
        score, in ``scale.shards`` parallel parts (``defs.fanout``)."""
        done = [p(generations, preference_model) for p in parts]
        return scores_merge(generations, preference_model, done)

    return scores
