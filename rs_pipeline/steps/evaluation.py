"""The round's evaluation: candidate and champion on the held-out eval and gate prompts, the
gate's decision, and the promotion record."""

from __future__ import annotations

import pyarrow as pa

from rs_pipeline.context import RunContext
from rs_pipeline.evaluation import evaluate_policy, gate_decision
from rs_pipeline.preference import score
from rs_pipeline.records import (
    PolicyCheckpoint,
    PolicyEvaluation,
    PreferenceCheckpoint,
    Promotion,
    RoundEvaluation,
)


def split_prompts(eval_prompts: pa.Table, name: str) -> list[str]:
    d = eval_prompts.to_pydict()
    return [p for p, s in zip(d["prompt"], d["split"]) if s == name]


def evaluate_round(ctx: RunContext, candidate: PolicyCheckpoint, champion: PolicyCheckpoint,
                   reward_model: PreferenceCheckpoint, eval_prompts: pa.Table,
                   round_key: str) -> tuple[RoundEvaluation, dict]:
    """Candidate vs champion: sampled and greedy metrics on the eval split, greedy on the gate
    split; the gate decides. Each model is loaded once."""
    cfg = ctx.settings
    rm, rtok = ctx.load_preference(reward_model)

    def reward_fn(prompts, completions):
        return score(rm, rtok, prompts, completions)

    sets = {name: split_prompts(eval_prompts, name) for name in ("eval", "gate")}
    results = {}
    chat = cfg.policy.chat_template
    for who, rec in (("candidate", candidate), ("champion", champion)):
        model, tok = ctx.load_policy(rec)
        results[who] = PolicyEvaluation(
            eval=evaluate_policy(model, tok, ctx.task, sets["eval"], ctx.sampling, reward_fn,
                                 cfg.seed, cfg.generation.batch_prompts, chat_template=chat),
            gate=evaluate_policy(model, tok, ctx.task, sets["gate"], ctx.sampling, reward_fn,
                                 cfg.seed, cfg.generation.batch_prompts, sampled=False,
                                 chat_template=chat))
    cand, champ = results["candidate"], results["champion"]
    decision = gate_decision(cand.gate, champ.gate, cand.eval, champ.eval, cfg.gate)
    evaluation = RoundEvaluation(round=round_key, candidate_id=candidate.id,
                                 champion_id=champion.id, reward_model_id=reward_model.id,
                                 candidate=cand, champion=champ, decision=decision)
    metrics = {f"eval/{k}": v for k, v in vars(cand.eval).items() if k != "n_prompts"}
    metrics.update({f"champion_eval/{k}": v for k, v in vars(champ.eval).items()
                    if k != "n_prompts"})
    metrics.update({"gate/greedy_acc": cand.gate.greedy_acc,
                    "gate/champion_greedy_acc": champ.gate.greedy_acc,
                    "gate/promoted": int(decision.promoted),
                    "gate/reward_hacking": int(decision.reward_hacking)})
    return evaluation, metrics


def promote(evaluation: RoundEvaluation, candidate: PolicyCheckpoint) -> Promotion:
    """The promotion record of a candidate the gate passed."""
    if not evaluation.decision.promoted or evaluation.candidate_id != candidate.id:
        raise ValueError(f"round {evaluation.round}: candidate {candidate.id} was not passed by "
                         f"the gate ({evaluation.decision.reason})")
    return Promotion(round=evaluation.round, checkpoint=candidate,
                     reason=evaluation.decision.reason,
                     previous_champion_id=evaluation.champion_id)
