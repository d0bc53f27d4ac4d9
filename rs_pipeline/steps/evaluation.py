"""The round's evaluation: candidate and champion on the held-out eval and gate prompts, the
gate's decision, and the promotion record."""

from __future__ import annotations

import dataclasses
import json
import posixpath

import pyarrow as pa

from rs_pipeline.annotators import hps
from rs_pipeline.context import RunContext
from rs_pipeline.evaluation import (
    completion_metrics,
    gate_decision,
    greedy_completions,
    policy_completions,
)
from rs_pipeline.gate import (
    JudgeComparison,
    choose_judge,
    floor_check,
    hook_scores,
    mean,
    pairs_set_check,
    win_rate,
)
from rs_pipeline.ids import config_hash
from rs_pipeline.inputs import check_judgements_file
from rs_pipeline.modeling import load_preference, weights_id
from rs_pipeline.preference import pair_accuracy, score
from rs_pipeline.records import (
    GateDecision,
    PairAccCheck,
    PolicyCheckpoint,
    PolicyEvaluation,
    PolicyMetrics,
    PreferenceCheckpoint,
    Promotion,
    RoundEvaluation,
)
from rs_pipeline.resume import code_version


def split_prompts(eval_prompts: pa.Table, name: str) -> list[str]:
    d = eval_prompts.to_pydict()
    return [p for p, s in zip(d["prompt"], d["split"]) if s == name]


def evaluate_round(ctx: RunContext, candidate: PolicyCheckpoint, champion: PolicyCheckpoint,
                   reward_model: PreferenceCheckpoint, eval_prompts: pa.Table, round_key: str,
                   previous_reward_model: PreferenceCheckpoint | None = None,
                   seed_reward_model: PreferenceCheckpoint | None = None,
                   ) -> tuple[RoundEvaluation, dict]:
    """Candidate vs champion: sampled and greedy metrics on the eval split, greedy on the gate
    split; the gate's judge (``rs_pipeline.gate``) compares the gate split's greedy completions,
    the round's preference model is held to the pair-accuracy floor and, with
    ``gate.pairs_path``, to the previous one (``previous_reward_model``) on that pair set; the
    gate decides. ``seed_reward_model``: the judge ``auto`` falls back to. Each model is loaded
    once."""
    cfg = ctx.settings
    rm, rtok = ctx.load_preference(reward_model)

    def reward_fn(prompts, completions):
        return score(rm, rtok, prompts, completions)

    sets = {name: split_prompts(eval_prompts, name) for name in ("eval", "gate")}
    results, greedy = {}, {}
    for who, rec in (("candidate", candidate), ("champion", champion)):
        done = eval_completions(ctx, rec, sets)
        greedy[who] = done["gate"]["greedy"]
        results[who] = PolicyEvaluation(
            eval=completion_metrics(ctx.task, sets["eval"], done["eval"], reward_fn),
            gate=completion_metrics(ctx.task, sets["gate"], done["gate"], reward_fn))
    cand, champ = results["candidate"], results["champion"]
    comparison = judge_round(ctx, sets["gate"], greedy["candidate"], greedy["champion"], cand.gate,
                             champ.gate, seed_reward_model, round_key)
    checks = [floor_check(reward_model.pair_acc, cfg.gate.min_pair_acc, cfg.selection.selector)]
    if cfg.gate.pairs_path:
        checks.append(_pairs_set(ctx, (rm, rtok), reward_model, previous_reward_model))
    decision = gate_decision(cand.gate, champ.gate, cand.eval, champ.eval, cfg.gate, comparison,
                             checks)
    evaluation = RoundEvaluation(round=round_key, candidate_id=candidate.id,
                                 champion_id=champion.id, reward_model_id=reward_model.id,
                                 candidate=cand, champion=champ, decision=decision)
    metrics = {f"eval/{k}": v for k, v in vars(cand.eval).items() if k != "n_prompts"}
    metrics.update({f"champion_eval/{k}": v for k, v in vars(champ.eval).items()
                    if k != "n_prompts"})
    metrics.update({"gate/greedy_acc": cand.gate.greedy_acc,
                    "gate/champion_greedy_acc": champ.gate.greedy_acc,
                    "gate/promoted": int(decision.promoted),
                    "gate/reward_hacking": int(decision.reward_hacking),
                    **gate_metrics(decision)})
    return evaluation, metrics


def eval_completions(ctx: RunContext, policy: PolicyCheckpoint,
                     sets: dict[str, list[str]]) -> dict[str, dict]:
    """The policy's decoded eval-split samples and greedy completions and gate-split greedy
    completions, decoded once per (policy, prompts, sampling, seed, layout, code): a champion
    was the candidate of an earlier round's ``round_eval``, which stored them, so its
    evaluation is not decoded again (only the reward means are recomputed, with this round's
    preference model). Stored as JSON under ``<storage>/eval_completions/``."""
    cfg = ctx.settings
    chat, batch = cfg.policy.chat_template, cfg.generation.batch_prompts
    key = config_hash([policy.id, sets, dataclasses.asdict(ctx.sampling), cfg.seed, batch, chat,
                       code_version()])
    path = posixpath.join(ctx.store.root, "eval_completions", f"{key}.json")
    if ctx.store.fs.exists(path):
        with ctx.store.fs.open(path, "rb") as fh:
            return json.loads(fh.read())
    model, tok = ctx.load_policy(policy)
    gate = greedy_completions(model, tok, sets["gate"], ctx.sampling.max_new_tokens, batch, chat)
    done = {"eval": policy_completions(model, tok, sets["eval"], ctx.sampling, cfg.seed, batch,
                                       chat_template=chat),
            "gate": policy_completions(model, tok, sets["gate"], ctx.sampling, cfg.seed, batch,
                                       sampled=False, chat_template=chat, greedy=gate)}
    data = json.dumps(done).encode()
    ctx.store.atomic_write(path, lambda fh: fh.write(data))
    return done


def gate_metrics(d: GateDecision) -> dict:
    """The gate's comparison as numbers (MLflow metrics, asset metadata); None where not
    applied."""
    floor, pairs = d.pair_acc_floor, d.pairs_set

    def ok(check):
        return None if check is None or check.value is None else int(check.passed)

    return {"gate/judge_candidate": d.candidate, "gate/judge_champion": d.champion,
            "gate/judge_regressed": int(d.regressed),
            "gate/judge_fallback": int(d.judge == "seed_preference"),
            "gate/pair_acc": floor.value if floor else None,
            "gate/pair_acc_floor": floor.bar if floor else None,
            "gate/pair_acc_floor_ok": ok(floor),
            "gate/pairs_set_acc": pairs.value if pairs else None,
            "gate/pairs_set_previous_acc": pairs.reference if pairs else None,
            "gate/pairs_set_ok": ok(pairs)}


def judge_round(ctx: RunContext, prompts: list[str], cand: list[str], champ: list[str],
                cand_gate: PolicyMetrics, champ_gate: PolicyMetrics,
                seed_reward_model: PreferenceCheckpoint | None,
                round_key: str) -> JudgeComparison:
    """What the gate's judge says of the candidate's and the champion's greedy completions of
    the gate prompts."""
    g = ctx.settings.gate
    choice = choose_judge(ctx.settings, ctx.task)
    kind, note = choice.kind, choice.note
    if kind == "verifier":
        return JudgeComparison(kind, "greedy_acc", cand_gate.greedy_acc, champ_gate.greedy_acc,
                               note=note)
    if kind == "hook":
        return JudgeComparison(kind, "hook_mean", mean(hook_scores(g.hook, prompts, cand)),
                               mean(hook_scores(g.hook, prompts, champ)), g.hook, note)
    if kind in ("reward_model", "seed_preference"):
        if kind == "reward_model":
            model, tok = load_preference(g.reward_model_path)
            judge_id = weights_id(model, "rm")
        else:
            if seed_reward_model is None:
                raise ValueError("the gate fell back to the seed preference model, but none was "
                                 "given")
            model, tok = ctx.load_preference(seed_reward_model)
            judge_id = seed_reward_model.id
        return JudgeComparison(kind, "greedy_mean_reward", mean(score(model, tok, prompts, cand)),
                               mean(score(model, tok, prompts, champ)), judge_id, note)
    annotator = ctx.annotator
    asked = [(p, a, b) for p, a, b in zip(prompts, cand, champ) if a != b]
    labels = annotator.label(asked, salt=f"gate-{round_key}") if asked else []
    given = iter(hps(labels))
    rate, counted = win_rate([None if a == b else next(given) for a, b in zip(cand, champ)],
                             cand, champ)
    who = sorted({lab.annotator_id for lab in labels if lab is not None})
    note = "; ".join(n for n in (note, f"{counted} of {len(prompts)} gate pairs counted "
                                       f"({len(prompts) - len(asked)} identical)") if n)
    return JudgeComparison(kind, "win_rate", rate, None if rate is None else 1.0 - rate,
                           ",".join(who) or annotator.source, note)


def _pairs_set(ctx: RunContext, loaded, reward_model: PreferenceCheckpoint,
               previous: PreferenceCheckpoint | None) -> PairAccCheck:
    """The round's preference model against the previous one on ``gate.pairs_path``."""
    rows = check_judgements_file(ctx.settings.gate.pairs_path, ctx.settings.inputs.quarantine).rows
    pairs = [(r["prompt"], r["completion_a"], r["completion_b"], r["hp"]) for r in rows]
    value = pair_accuracy(*loaded, pairs)
    if previous is None or previous.id == reward_model.id:
        reference = value  # the round kept its previous model
    else:
        reference = pair_accuracy(*ctx.load_preference(previous), pairs)
    return pairs_set_check(value, reference, ctx.settings.gate.tolerance)


def promote(evaluation: RoundEvaluation, candidate: PolicyCheckpoint) -> Promotion:
    """The promotion record of a candidate the gate passed."""
    if not evaluation.decision.promoted or evaluation.candidate_id != candidate.id:
        raise ValueError(f"round {evaluation.round}: candidate {candidate.id} was not passed by "
                         f"the gate ({evaluation.decision.reason})")
    return Promotion(round=evaluation.round, checkpoint=candidate,
                     reason=evaluation.decision.reason,
                     previous_champion_id=evaluation.champion_id)
