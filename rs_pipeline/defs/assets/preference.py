"""Round assets that judge: on-policy labelled pairs, the refreshed preference model, scores."""


import random

import dagster as dg
import pyarrow as pa

from rs_pipeline.annotation import SimulatedAnnotator
from rs_pipeline.defs.history import earlier_labels, preference_before
from rs_pipeline.defs.metadata import distinct_ids, picture, table_metadata, track
from rs_pipeline.defs.mlflow_resource import PREFERENCE_MODEL, MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.errors import InputError
from rs_pipeline.ids import table_version
from rs_pipeline.modeling import load_preference
from rs_pipeline.pairs import STRATEGIES
from rs_pipeline.preference import pair_accuracy, score, train_preference
from rs_pipeline.report import reward_figure
from rs_pipeline.round_steps import label_round_pairs, labelled_pairs, score_generations

ROUND = "round"


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work",
          deps=["seed_preference_model"])
def preference_labels(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                      generations: pa.Table) -> dg.Output[pa.Table]:
    """Pairs of distinct completions from this round's samples, labelled by the annotator
    (by default each prompt's first pair is the previous preference model's favourite against
    another completion: labels go where selection will look)."""
    pc = pipeline.settings.preference
    if pc.pair_strategy not in STRATEGIES:
        raise InputError(f"setting preference.pair_strategy: unknown {pc.pair_strategy!r} "
                         f"(known: {STRATEGIES})")
    prior = None
    if pc.pair_strategy == "top_vs_other":
        parent = preference_before(context.instance, pipeline.store, context.partition_key)
        model, tok = load_preference(parent["path"])
        prior = score(model, tok, generations.column("prompt").to_pylist(),
                      generations.column("completion").to_pylist())
    table = label_round_pairs(generations, pipeline.annotator(), pc.pairs_per_round,
                              pc.heldout_fraction, pipeline.settings.seed, context.partition_key,
                              scores=prior)
    decided = [h for h in table.column("hp").to_pylist() if h != 0.5]
    return dg.Output(table, data_version=dg.DataVersion(table_version(table)),
                     metadata=table_metadata(table, pairs=table.num_rows,
                                             ties=table.num_rows - len(decided)))


def _verifier_pairs(task, pairs):
    """The same pairs labelled by the verifier alone (true accuracy, free of annotator noise)."""
    truth = SimulatedAnnotator(task, label_noise=0.0).label([p[:3] for p in pairs])
    return [(*p[:3], hp) for p, hp in zip(pairs, truth)]


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work",
          deps=["seed_preference_model"])
def preference_model(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     mlflow: MlflowResource, preference_labels: pa.Table) -> dg.Output[dict]:
    """The previous preference model fine-tuned on this round's pairs plus replayed earlier pairs."""
    cfg, pc, key = pipeline.settings, pipeline.settings.preference, context.partition_key
    parent = preference_before(context.instance, pipeline.store, key)
    rows = labelled_pairs(preference_labels)
    split = preference_labels.column("split").to_pylist()
    train = [r for r, s in zip(rows, split) if s == "train"]
    held = [r for r, s in zip(rows, split) if s == "heldout"]
    replay = [r for t in earlier_labels(context.instance, pipeline.store, key)
              for r, s in zip(labelled_pairs(t), t.column("split").to_pylist()) if s == "train"]
    replay = random.Random(f"{cfg.seed}|{key}|replay").sample(replay, min(len(replay),
                                                                           pc.replay_pairs))
    model, tok = load_preference(parent["path"])
    metrics = train_preference(model, tok, train + replay, epochs=pc.epochs, lr=pc.learning_rate,
                               batch_size=pc.batch_size, seed=cfg.seed)
    acc = pair_accuracy(model, tok, held)
    acc_true = (pair_accuracy(model, tok, _verifier_pairs(pipeline.task, held))
                if pipeline.task.has_verifier else None)
    record = pipeline.checkpoints.save(model, tok, "preference", "rm", round=key,
                                       parent_id=parent["id"], train_loss=metrics["train_loss"],
                                       pair_acc=acc, pair_acc_verifier=acc_true,
                                       train_pairs=len(train), replay_pairs=len(replay),
                                       labels_version=table_version(preference_labels))
    version = mlflow.log_checkpoint(key, record, PREFERENCE_MODEL, context.run_id)
    meta = track(context, mlflow, key, {
        "pref/pair_acc": acc, "pref/pair_acc_verifier": acc_true,
        "pref/train_loss": metrics["train_loss"], "pref/train_pairs": len(train),
        "pref/replay_pairs": len(replay)})
    record = {**record, "reward_model_id": record["id"], "mlflow_version": version}
    return dg.Output(record, data_version=dg.DataVersion(record["id"]),
                     metadata={**meta, "reward_model_id": record["id"],
                               "parent_reward_model_id": parent["id"]})


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work")
def scores(context: dg.AssetExecutionContext, pipeline: PipelineResource,
           mlflow: MlflowResource, generations: pa.Table,
           preference_model: dict) -> dg.Output[pa.Table]:
    """Every generation's reward under this round's preference model, and its selection score."""
    sel = pipeline.settings.selection
    model, tok = load_preference(preference_model["path"])
    table = score_generations(generations, model, tok, preference_model["id"], pipeline.task,
                              sel.selector, sel.mix_weight)
    rewards = table.column("reward").to_pylist()
    meta = track(context, mlflow, context.partition_key,
                 {"score/mean_reward": sum(rewards) / max(1, len(rewards))})
    verdicts = table.column("verifier_score").to_pylist()
    groups = ({"all": rewards} if None in verdicts else
              {"verifier: right": [r for r, v in zip(rewards, verdicts) if v > 0],
               "verifier: wrong": [r for r, v in zip(rewards, verdicts) if v <= 0]})
    return dg.Output(table, data_version=dg.DataVersion(table_version(table)),
                     metadata={**table_metadata(table), **meta,
                               **distinct_ids(table, "policy_id", "reward_model_id"),
                               "reward_distribution": picture(reward_figure(groups), "rewards")})
