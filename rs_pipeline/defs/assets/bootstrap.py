"""Unpartitioned assets: prompt sets, the round-0 policy, seed preferences and the first
preference model."""


import dagster as dg
import pyarrow as pa

from rs_pipeline.annotation import FileAnnotator
from rs_pipeline.defs.metadata import table_metadata, track
from rs_pipeline.defs.mlflow_resource import POLICY_MODEL, PREFERENCE_MODEL, MlflowResource
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.ids import config_hash, prompt_id, table_version
from rs_pipeline.modeling import load_policy, load_preference, preference_from_policy
from rs_pipeline.preference import pair_accuracy, train_preference
from rs_pipeline.pretrain import pretrain_base_policy
from rs_pipeline.round_steps import build_prompt_sets, labelled_pairs, seed_preference_table
from rs_pipeline.schemas import make_table

BOOTSTRAP = "bootstrap"


@dg.multi_asset(
    outs={
        "prompt_pool": dg.AssetOut(description="Validated, de-duplicated training prompts."),
        "eval_prompts": dg.AssetOut(description="Held-out eval and gate prompts (never trained on)."),
    },
    group_name=BOOTSTRAP,
)
def prompt_sets(pipeline: PipelineResource):
    cfg = pipeline.settings
    pool, held, stats = build_prompt_sets(pipeline.task.prompts(), cfg.task.eval_size,
                                          cfg.task.gate_size, cfg.seed)
    yield dg.Output(pool, "prompt_pool", data_version=dg.DataVersion(table_version(pool)),
                    metadata=table_metadata(pool, **stats))
    yield dg.Output(held, "eval_prompts", data_version=dg.DataVersion(table_version(held)),
                    metadata=table_metadata(held))


@dg.asset(group_name=BOOTSTRAP, pool="model_work")
def base_policy(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                mlflow: MlflowResource, prompt_pool: pa.Table) -> dg.Output[dict]:
    """The round-0 policy: your own checkpoint folder, or the demo's tiny GPT-2 pretrained on
    the task's bugged data. The same config does no new work."""
    cfg = pipeline.settings
    key = config_hash([cfg.task.name, cfg.seed, cfg.section_dict("policy"),
                       table_version(prompt_pool)])
    record = pipeline.checkpoints.cached("policies", key)
    reused = record is not None
    if not reused:
        if cfg.policy.base_path:
            model, tok = load_policy(cfg.policy.base_path)
            metrics = {}
        else:
            model, tok, metrics = pretrain_base_policy(
                pipeline.task, prompt_pool.column("prompt").to_pylist(), cfg.policy, cfg.seed)
        record = pipeline.checkpoints.save(
            model, tok, "policies", "pol", round=None, parent_policy_id=None,
            sft_dataset_version=None, source=cfg.policy.base_path or "demo-pretraining",
            pretrain_loss=metrics.get("train_loss"))
        pipeline.checkpoints.remember("policies", key, record)
    version = mlflow.log_checkpoint(BOOTSTRAP, record, POLICY_MODEL, context.run_id)
    if mlflow.champion() is None:
        mlflow.set_champion(version)
    record = {**record, "policy_id": record["id"], "mlflow_version": version}
    meta = track(context, mlflow, BOOTSTRAP, {"base/pretrain_loss": record.get("pretrain_loss")})
    return dg.Output(record, data_version=dg.DataVersion(record["id"]),
                     metadata={**meta, "policy_id": record["id"], "reused": reused,
                               "rs-policy version": version})


@dg.asset(group_name=BOOTSTRAP)
def seed_preferences(pipeline: PipelineResource, prompt_pool: pa.Table) -> dg.Output[pa.Table]:
    """Labelled pairs for the first preference model: a human judgement file, or synthetic pairs
    (right answer, systematic bug, random corruption) labelled by the annotator."""
    cfg = pipeline.settings
    if cfg.preference.seed_labels_path:
        rows = FileAnnotator(cfg.preference.seed_labels_path).all_pairs()
        table = make_table("seed_preferences", {
            "prompt_id": [prompt_id(r[0]) for r in rows], "prompt": [r[0] for r in rows],
            "completion_a": [r[1] for r in rows], "completion_b": [r[2] for r in rows],
            "hp": [r[3] for r in rows], "annotator": ["file"] * len(rows)})
    else:
        table = seed_preference_table(pipeline.task, prompt_pool.column("prompt").to_pylist(),
                                      cfg.preference.seed_pairs, pipeline.annotator(), cfg.seed)
    return dg.Output(table, data_version=dg.DataVersion(table_version(table)),
                     metadata=table_metadata(table))


@dg.asset(group_name=BOOTSTRAP, pool="model_work")
def seed_preference_model(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                          mlflow: MlflowResource, base_policy: dict,
                          seed_preferences: pa.Table) -> dg.Output[dict]:
    """The first reward model: the policy's body plus a one-output head, BT on seed pairs."""
    cfg, pc = pipeline.settings, pipeline.settings.preference
    key = config_hash([base_policy["id"], table_version(seed_preferences), cfg.seed,
                       cfg.section_dict("preference")])
    record = pipeline.checkpoints.cached("preference", key)
    if record is None:
        pairs = labelled_pairs(seed_preferences)
        n_held = max(1, int(len(pairs) * pc.heldout_fraction))
        train, held = pairs[n_held:], pairs[:n_held]
        model, tok = (load_preference(pc.base_path) if pc.base_path
                      else preference_from_policy(base_policy["path"], cfg.seed))
        metrics = train_preference(model, tok, train, epochs=pc.seed_epochs,
                                   lr=pc.seed_learning_rate, batch_size=pc.batch_size,
                                   seed=cfg.seed)
        record = pipeline.checkpoints.save(
            model, tok, "preference", "rm", round=None, parent_id=None,
            policy_init_id=base_policy["id"], train_loss=metrics["train_loss"],
            pair_acc=pair_accuracy(model, tok, held), train_pairs=len(train))
        pipeline.checkpoints.remember("preference", key, record)
    version = mlflow.log_checkpoint(BOOTSTRAP, record, PREFERENCE_MODEL, context.run_id)
    meta = track(context, mlflow, BOOTSTRAP, {"seed_pref/pair_acc": record["pair_acc"],
                                              "seed_pref/train_loss": record["train_loss"]})
    record = {**record, "reward_model_id": record["id"], "mlflow_version": version}
    return dg.Output(record, data_version=dg.DataVersion(record["id"]),
                     metadata={**meta, "reward_model_id": record["id"]})
