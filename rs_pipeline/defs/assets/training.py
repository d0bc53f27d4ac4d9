"""The round's candidate checkpoint: the sampling policy fine-tuned on the SFT set."""

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.metadata import output
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.pipes_training import launch_training
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import run_step
from rs_pipeline.imports import lazy_module
from rs_pipeline.records import ChampionChoice, PolicyCheckpoint

training = lazy_module("rs_pipeline.steps.training")

ROUND = "round"


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work")
def policy_checkpoint(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                      mlflow: MlflowResource, sft_dataset: pa.Table, dpo_pairs: pa.Table,
                      sampling_policy: ChampionChoice) -> dg.Output[PolicyCheckpoint]:
    """The champion trained by ``sft.method``: SFT on the kept set (loss on completion tokens
    only, budget in epochs), DPO on the pairs, or both; in the step's process or, with
    ``scale.training_launcher: accelerate``, out of process (``defs.pipes_training``)."""
    key, champion, ctx = context.partition_key, sampling_policy.checkpoint, pipeline.ctx
    inputs = training.training_inputs(ctx, sft_dataset, champion, dpo_pairs)
    if ctx.settings.scale.training_launcher == "accelerate":
        def train(_):  # the same work, by accelerate launch under Dagster Pipes
            return launch_training(context, pipeline)
    else:
        def train(resume):
            return training.train_candidate(ctx, sft_dataset, champion, key, resume, dpo_pairs)
    record, metrics, reused = run_step(context, pipeline, "policy_checkpoint", inputs, train)
    record = mlflow.registered(key, record, context.run_id)
    return output(context, mlflow, record, metrics, policy_id=record.id, reused=reused,
                  parent_policy_id=record.parent_id,
                  sft_dataset_version=record.sft_dataset_version, method=record.method,
                  dpo_pairs_version=record.dpo_pairs_version, note=record.note,
                  **{"rs-policy version": record.mlflow_version})
