"""Round assets that sample: the round's prompts, the policy it samples from, the generations."""


import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.history import champion_before
from rs_pipeline.defs.metadata import table_metadata, track
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.ids import table_version
from rs_pipeline.modeling import load_policy
from rs_pipeline.round_steps import draw_round_prompts, generate

ROUND = "round"


@dg.asset(partitions_def=ROUNDS, group_name=ROUND)
def round_prompts(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                  prompt_pool: pa.Table) -> dg.Output[pa.Table]:
    """This round's prompts: a seeded draw from the training pool."""
    cfg = pipeline.settings
    table = draw_round_prompts(prompt_pool, context.partition_key, cfg.task.round_size, cfg.seed)
    return dg.Output(table, data_version=dg.DataVersion(table_version(table)),
                     metadata=table_metadata(table))


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, deps=["base_policy"])
def sampling_policy(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.Output[dict]:
    """The policy this round samples from and fine-tunes: the latest promoted checkpoint before
    this round, else the base policy. Resolved once per round and recorded."""
    rec = champion_before(context.instance, pipeline.store, context.partition_key)
    rec = {**rec, "policy_id": rec["id"]}
    return dg.Output(rec, data_version=dg.DataVersion(rec["id"]),
                     metadata={"policy_id": rec["id"], "source": rec["source"],
                               "source_round": rec["source_round"] or "-"})


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work")
def generations(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                mlflow: MlflowResource, round_prompts: pa.Table,
                sampling_policy: dict) -> dg.Output[pa.Table]:
    """N samples per prompt from the sampling policy (prefill once, KV cache expanded N times)."""
    cfg = pipeline.settings
    model, tok = load_policy(sampling_policy["path"])
    table, stats = generate(model, tok, round_prompts, pipeline.sampling_params(),
                            sampling_policy["id"], context.partition_key, cfg.seed,
                            cfg.generation.batch_prompts)
    meta = track(context, mlflow, context.partition_key,
                 {"gen/tokens_per_s": stats["tokens_per_s"], "gen/seconds": stats["seconds"],
                  "gen/rows": table.num_rows})
    return dg.Output(table, data_version=dg.DataVersion(table_version(table)),
                     metadata={**table_metadata(table), **meta,
                               "policy_id": sampling_policy["id"]})
