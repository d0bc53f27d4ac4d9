"""Evaluation, the promotion gate (blocking checks) and promotion to champion."""

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.metadata import numeric, output, picture
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import run_step
from rs_pipeline.history import history_frame, read_history
from rs_pipeline.ids import round_number
from rs_pipeline.records import (
    ChampionChoice,
    PolicyCheckpoint,
    PreferenceCheckpoint,
    Promotion,
    RoundEvaluation,
)
from rs_pipeline.report import accuracy_figure
from rs_pipeline.steps import evaluation

ROUND = "round"
GATE_CHECK, HACKING_CHECK = "no_regression_vs_champion", "no_reward_hacking"


@dg.asset(
    partitions_def=ROUNDS, group_name=ROUND, pool="model_work",
    check_specs=[
        dg.AssetCheckSpec(GATE_CHECK, asset="round_eval", blocking=True,
                          description="Candidate's gate metric is not below the champion's "
                                      "minus the tolerance (gate prompts, not the eval set)."),
        dg.AssetCheckSpec(HACKING_CHECK, asset="round_eval", blocking=True,
                          description="Preference score did not rise while verifier accuracy "
                                      "fell."),
    ],
)
def round_eval(context: dg.AssetExecutionContext, pipeline: PipelineResource,
               mlflow: MlflowResource, policy_checkpoint: PolicyCheckpoint,
               sampling_policy: ChampionChoice, preference_model: PreferenceCheckpoint,
               eval_prompts: pa.Table):
    """Candidate vs champion on held-out prompts; the gate's decision is recorded either way."""
    ctx, key, champion = pipeline.ctx, context.partition_key, sampling_policy.checkpoint
    ev, metrics, reused = run_step(
        context, pipeline, "round_eval",
        {"candidate": policy_checkpoint, "champion": champion, "reward_model": preference_model,
         "eval_prompts": eval_prompts},
        lambda r: evaluation.evaluate_round(ctx, policy_checkpoint, champion, preference_model,
                                            eval_prompts, key))
    d = ev.decision
    history = history_frame(read_history(ctx.store, current=ev))
    yield output(context, mlflow, ev, metrics, decision=d.reason, policy_id=ev.candidate_id,
                 reused=reused,
                 accuracy_per_round=picture(accuracy_figure(history), "accuracy per round"))
    mlflow.finish_round(key, context.run_id)
    yield dg.AssetCheckResult(
        check_name=GATE_CHECK, passed=not d.regressed, description=d.reason,
        metadata=numeric({"metric": d.metric, "candidate": d.candidate, "champion": d.champion,
                          "tolerance": ctx.settings.gate.tolerance}))
    cand, champ = ev.candidate.eval, ev.champion.eval
    yield dg.AssetCheckResult(
        check_name=HACKING_CHECK, passed=not d.reward_hacking, description=d.reason,
        metadata=numeric({"candidate_mean_reward": cand.mean_reward,
                          "champion_mean_reward": champ.mean_reward,
                          "candidate_sample_acc": cand.sample_acc,
                          "champion_sample_acc": champ.sample_acc}))


@dg.asset(partitions_def=ROUNDS, group_name=ROUND)
def promotion(context: dg.AssetExecutionContext, mlflow: MlflowResource,
              round_eval: RoundEvaluation,
              policy_checkpoint: PolicyCheckpoint) -> dg.Output[Promotion]:
    """The candidate becomes the champion (runs only when the blocking gate checks pass); the
    next round samples from it. MLflow alias ``rs-policy@champion`` follows."""
    key = context.partition_key
    record = evaluation.promote(round_eval, policy_checkpoint)
    promoted = {*context.instance.get_materialized_partitions(dg.AssetKey("promotion")), key}
    latest = max(promoted, key=round_number)
    if latest == key:  # the champion is the latest promotion by round order, never an older one
        mlflow.set_champion(policy_checkpoint.mlflow_version)
    return dg.Output(record, data_version=dg.DataVersion(policy_checkpoint.id), metadata={
        "policy_id": policy_checkpoint.id, "reason": record.reason,
        "rs-policy version": policy_checkpoint.mlflow_version,
        "champion": "this candidate" if latest == key else f"stays with round {latest}"})
