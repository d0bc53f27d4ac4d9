"""Evaluation, the promotion gate (blocking checks) and promotion to champion."""


import dataclasses

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.metadata import numeric, picture, track
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.evaluation import evaluate_policy, gate_decision
from rs_pipeline.modeling import load_policy, load_preference
from rs_pipeline.preference import score
from rs_pipeline.report import accuracy_figure, round_history

ROUND = "round"
GATE_CHECK, HACKING_CHECK = "no_regression_vs_champion", "no_reward_hacking"


def _split(eval_prompts: pa.Table, name: str) -> list[str]:
    d = eval_prompts.to_pydict()
    return [p for p, s in zip(d["prompt"], d["split"]) if s == name]


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
               mlflow: MlflowResource, policy_checkpoint: dict, sampling_policy: dict,
               preference_model: dict, eval_prompts: pa.Table):
    """Candidate vs champion on held-out prompts; the gate's decision is recorded either way."""
    cfg, task, key = pipeline.settings, pipeline.task, context.partition_key
    rm, rtok = load_preference(preference_model["path"])

    def reward_fn(prompts, completions):
        return score(rm, rtok, prompts, completions)

    params = pipeline.sampling_params()
    results = {}
    for who, rec in (("candidate", policy_checkpoint), ("champion", sampling_policy)):
        model, tok = load_policy(rec["path"])
        results[who] = {
            "eval": evaluate_policy(model, tok, task, _split(eval_prompts, "eval"), params,
                                    reward_fn, cfg.seed, cfg.generation.batch_prompts),
            "gate": evaluate_policy(model, tok, task, _split(eval_prompts, "gate"), params,
                                    reward_fn, cfg.seed, cfg.generation.batch_prompts,
                                    sampled=False),
        }
    g = cfg.gate
    decision = gate_decision(results["candidate"]["gate"], results["champion"]["gate"],
                             results["candidate"]["eval"], results["champion"]["eval"],
                             g.tolerance, g.hacking_reward_margin, g.hacking_acc_margin)
    cand = results["candidate"]["eval"]
    champ = results["champion"]["eval"]
    metrics = {f"eval/{k}": v for k, v in cand.items() if k != "n_prompts"}
    metrics.update({f"champion_eval/{k}": v for k, v in champ.items() if k != "n_prompts"})
    metrics.update({"gate/greedy_acc": results["candidate"]["gate"]["greedy_acc"],
                    "gate/champion_greedy_acc": results["champion"]["gate"]["greedy_acc"],
                    "gate/promoted": int(decision.promoted),
                    "gate/reward_hacking": int(decision.reward_hacking)})
    meta = track(context, mlflow, key, metrics)
    record = {"round": key, "policy_id": policy_checkpoint["id"],
              "champion_policy_id": sampling_policy["id"],
              "reward_model_id": preference_model["id"], **results,
              "decision": dataclasses.asdict(decision)}
    history = round_history(pipeline.store, current=record)
    yield dg.Output(record, metadata={
        **meta, "decision": decision.reason, "policy_id": policy_checkpoint["id"],
        "accuracy_per_round": picture(accuracy_figure(history), "accuracy per round")})
    yield dg.AssetCheckResult(
        check_name=GATE_CHECK, passed=not decision.regressed,
        metadata=numeric({"metric": decision.metric, "candidate": decision.candidate,
                          "champion": decision.champion, "tolerance": g.tolerance}),
        description=decision.reason)
    yield dg.AssetCheckResult(
        check_name=HACKING_CHECK, passed=not decision.reward_hacking,
        metadata=numeric({"candidate_mean_reward": cand["mean_reward"],
                          "champion_mean_reward": champ["mean_reward"],
                          "candidate_sample_acc": cand["sample_acc"],
                          "champion_sample_acc": champ["sample_acc"]}),
        description=decision.reason)


@dg.asset(partitions_def=ROUNDS, group_name=ROUND)
def promotion(context: dg.AssetExecutionContext, mlflow: MlflowResource, round_eval: dict,
              policy_checkpoint: dict) -> dg.Output[dict]:
    """The candidate becomes the champion (runs only when the blocking gate checks pass); the
    next round samples from it. MLflow alias ``rs-policy@champion`` follows."""
    mlflow.set_champion(policy_checkpoint["mlflow_version"])
    record = {"round": context.partition_key, "checkpoint": policy_checkpoint,
              "reason": round_eval["decision"]["reason"],
              "previous_champion_id": round_eval["champion_policy_id"]}
    return dg.Output(record, data_version=dg.DataVersion(policy_checkpoint["id"]), metadata={
        "policy_id": policy_checkpoint["id"], "reason": record["reason"],
        "rs-policy version": policy_checkpoint["mlflow_version"]})
