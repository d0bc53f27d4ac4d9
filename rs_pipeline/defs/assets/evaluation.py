"""Evaluation, the promotion gate (blocking checks) and promotion to champion."""

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.assets.monitors import monitor_check_results, monitor_check_specs
from rs_pipeline.defs.history import materialized_rounds, preference_before
from rs_pipeline.defs.metadata import numeric, output, picture
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import run_step
from rs_pipeline.gate import choose_judge, hook_code_version
from rs_pipeline.history import history_frame, read_history
from rs_pipeline.ids import file_version, folder_version, round_number
from rs_pipeline.imports import lazy_module
from rs_pipeline.records import (
    ChampionChoice,
    MonitorReport,
    PolicyCheckpoint,
    PreferenceCheckpoint,
    Promotion,
    RoundEvaluation,
)
from rs_pipeline.report import accuracy_figure

evaluation = lazy_module("rs_pipeline.steps.evaluation")
steps_monitors = lazy_module("rs_pipeline.steps.monitors")

ROUND = "round"
GATE_CHECK, HACKING_CHECK = "no_regression_vs_champion", "no_reward_hacking"
PAIRS_CHECK = "preference_model_pair_accuracy"


def gate_inputs(instance: dg.DagsterInstance, ctx, key: str) -> tuple[dict, dict]:
    """What the gate needs beyond the round's own assets, only where its settings use it: the
    previous preference model (``gate.pairs_path``), the seed one (the judge ``auto`` falls back
    to) and the hook's code version. Returns (reuse inputs, ``evaluate_round`` arguments)."""
    inputs, extra = {}, {}
    if ctx.settings.gate.pairs_path:
        extra["previous_reward_model"] = preference_before(instance, ctx.store, key)
        inputs["pairs_set"] = file_version(ctx.settings.gate.pairs_path)
    judge = choose_judge(ctx.settings, ctx.task).kind
    if judge == "seed_preference":
        extra["seed_reward_model"] = ctx.store.read_record("seed_preference_model")
    if judge == "hook":
        inputs["hook_code"] = hook_code_version(ctx.settings.gate.hook)
    if judge == "reward_model":
        inputs["gate_reward_model"] = folder_version(ctx.settings.gate.reward_model_path)
    return {**inputs, **extra}, extra


@dg.asset(
    partitions_def=ROUNDS, group_name=ROUND, pool="model_work",
    check_specs=[
        dg.AssetCheckSpec(GATE_CHECK, asset="round_eval", blocking=True,
                          description="Candidate's gate metric is not below the champion's "
                                      "minus the tolerance (gate prompts, not the eval set)."),
        dg.AssetCheckSpec(HACKING_CHECK, asset="round_eval", blocking=True,
                          description="Preference score did not rise while verifier accuracy "
                                      "fell."),
        dg.AssetCheckSpec(PAIRS_CHECK, asset="round_eval", blocking=True,
                          description="The round's preference model's held-out pair accuracy "
                                      "is at least gate.min_pair_acc and, with gate.pairs_path, "
                                      "not below the previous model's on that set."),
        *monitor_check_specs("round_eval"),
    ],
)
def round_eval(context: dg.AssetExecutionContext, pipeline: PipelineResource,
               mlflow: MlflowResource, policy_checkpoint: PolicyCheckpoint,
               sampling_policy: ChampionChoice, preference_model: PreferenceCheckpoint,
               eval_prompts: pa.Table, round_monitors: MonitorReport):
    """Candidate vs champion on held-out prompts; the gate's decision is recorded either way.
    A failing blocking monitor (``monitors.blocking``) refuses promotion too."""
    ctx, key, champion = pipeline.ctx, context.partition_key, sampling_policy.checkpoint
    inputs, extra = gate_inputs(context.instance, ctx, key)
    ev, metrics, reused = run_step(
        context, pipeline, "round_eval",
        {"candidate": policy_checkpoint, "champion": champion, "reward_model": preference_model,
         "eval_prompts": eval_prompts, **inputs},
        lambda r: evaluation.evaluate_round(ctx, policy_checkpoint, champion, preference_model,
                                            eval_prompts, key, **extra))
    ev, metrics = steps_monitors.refuse_for_monitors(ev, metrics, round_monitors)
    d = ev.decision
    history = history_frame(read_history(ctx.store, current=ev))
    yield output(context, mlflow, ev, metrics, decision=d.reason, policy_id=ev.candidate_id,
                 reused=reused, gate=d.summary(), gate_judge=d.judge, gate_judge_id=d.judge_id,
                 gate_judge_note=d.judge_note,
                 accuracy_per_round=picture(accuracy_figure(history), "accuracy per round"))
    mlflow.note(key, {"gate/judge": d.judge, "gate/judge_id": d.judge_id,
                      "gate/judge_note": d.judge_note, "gate/summary": d.summary()},
                context.run_id)
    mlflow.finish_round(key, context.run_id)
    yield dg.AssetCheckResult(
        check_name=GATE_CHECK, passed=not d.regressed, description=d.reason,
        metadata=numeric({"judge": d.judge, "judge_id": d.judge_id, "metric": d.metric,
                          "candidate": d.candidate, "champion": d.champion,
                          "tolerance": ctx.settings.gate.tolerance}))
    floor, pairs = d.pair_acc_floor, d.pairs_set
    yield dg.AssetCheckResult(
        check_name=PAIRS_CHECK, passed=all(c is None or c.passed for c in (floor, pairs)),
        description=d.reason, metadata=numeric({
            "pair_acc": floor and floor.value, "min_pair_acc": floor and floor.bar,
            "floor_note": floor and floor.note or None,
            "pairs_set_acc": pairs and pairs.value,
            "pairs_set_previous_acc": pairs and pairs.reference,
            "pairs_set_note": pairs and pairs.note or None}))
    cand, champ = ev.candidate.eval, ev.champion.eval
    yield dg.AssetCheckResult(
        check_name=HACKING_CHECK, passed=not d.reward_hacking, description=d.reason,
        metadata=numeric({"candidate_mean_reward": cand.mean_reward,
                          "champion_mean_reward": champ.mean_reward,
                          "candidate_sample_acc": cand.sample_acc,
                          "champion_sample_acc": champ.sample_acc}))
    yield from monitor_check_results(round_monitors)


@dg.asset(partitions_def=ROUNDS, group_name=ROUND)
def promotion(context: dg.AssetExecutionContext, pipeline: PipelineResource,
              mlflow: MlflowResource, round_eval: RoundEvaluation,
              policy_checkpoint: PolicyCheckpoint) -> dg.Output[Promotion]:
    """The candidate becomes the champion (runs only when the blocking gate checks pass); the
    next round samples from it. MLflow alias ``rs-policy@champion`` follows."""
    key = context.partition_key
    record = evaluation.promote(round_eval, policy_checkpoint)
    promoted = {*materialized_rounds(context.instance, pipeline.ctx.store, "promotion"), key}
    latest = max(promoted, key=round_number)
    if latest == key:  # the champion is the latest promotion by round order, never an older one
        mlflow.set_champion(policy_checkpoint.mlflow_version)
    return dg.Output(record, data_version=dg.DataVersion(policy_checkpoint.id), metadata={
        "policy_id": policy_checkpoint.id, "reason": record.reason,
        "rs-policy version": policy_checkpoint.mlflow_version,
        "champion": "this candidate" if latest == key else f"stays with round {latest}"})
