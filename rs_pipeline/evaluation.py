"""Evaluating a policy on held-out prompts, and the promotion gate's decision."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rs_pipeline.chat import ChatMode, prompt_kwargs
from rs_pipeline.config import GateConfig
from rs_pipeline.gate import JudgeComparison
from rs_pipeline.generation import SamplingParams, sample_prompts
from rs_pipeline.ids import derive_seed, prompt_id
from rs_pipeline.records import GateDecision, PairAccCheck, PolicyMetrics
from rs_pipeline.tasks.base import Task

Scorer = Callable[[Sequence[str], Sequence[str]], list[float]]


def greedy_completions(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                       batch_prompts: int = 256, chat_template: ChatMode = "auto") -> list[str]:
    """The policy's greedy completion of each prompt (rendered as for sampling)."""
    chat = prompt_kwargs(model, tokenizer, prompts, chat_template)
    return sample_prompts(model, tokenizer, prompts, SamplingParams(
        n=1, temperature=0.0, max_new_tokens=max_new_tokens), lambda p, s: 0, batch_prompts,
        **chat)["completion"]


def evaluate_policy(model, tokenizer, task: Task, prompts: Sequence[str], params: SamplingParams,
                    reward_fn: Scorer | None, seed: int, batch_prompts: int = 256,
                    sampled: bool = True, chat_template: ChatMode = "auto",
                    greedy: Sequence[str] | None = None) -> PolicyMetrics:
    """Greedy and sampled metrics of a policy on ``prompts``.

    ``greedy_acc`` (verifier, greedy decoding), ``sample_acc`` (mean over N samples at the
    sampling temperature), ``pass_at_n``, ``mean_reward`` (``reward_fn`` over the samples),
    ``distinct_share`` (distinct completions / N, averaged over prompts), ``mean_length``
    (characters). Verifier metrics are None when the task has no verifier. ``sampled=False``
    measures greedy decoding only (the sampled metrics then describe the greedy answers).
    Sample ``s`` of a prompt is seeded by (seed, "eval", prompt id, s): the same draw for the
    candidate and the champion, on any batch layout. Prompts are rendered as for sampling
    (``chat_template``: the policy's chat template, see ``rs_pipeline.chat``). ``greedy``: the
    greedy completions when already decoded (``greedy_completions``).
    """
    done = policy_completions(model, tokenizer, prompts, params, seed, batch_prompts, sampled,
                              chat_template, greedy)
    return completion_metrics(task, prompts, done, reward_fn)


def policy_completions(model, tokenizer, prompts: Sequence[str], params: SamplingParams,
                       seed: int, batch_prompts: int = 256, sampled: bool = True,
                       chat_template: ChatMode = "auto",
                       greedy: Sequence[str] | None = None) -> dict[str, list]:
    """What ``evaluate_policy`` measures, decoded: ``greedy`` (one per prompt), ``samples`` and
    ``prompt_index`` (N per prompt; the greedy ones with ``sampled=False``). Plain lists (JSON)."""
    if greedy is None:
        greedy = greedy_completions(model, tokenizer, prompts, params.max_new_tokens,
                                    batch_prompts, chat_template)
    pids = [prompt_id(p) for p in prompts]
    samples = (sample_prompts(model, tokenizer, prompts, params,
                              lambda p, s: derive_seed(seed, "eval", pids[p], s), batch_prompts,
                              **prompt_kwargs(model, tokenizer, prompts, chat_template))
               if sampled else {"completion": list(greedy), "prompt_index": list(range(len(prompts)))})
    return {"greedy": list(greedy), "samples": list(samples["completion"]),
            "prompt_index": [int(i) for i in samples["prompt_index"]]}


def completion_metrics(task: Task, prompts: Sequence[str], done: dict[str, list],
                       reward_fn: Scorer | None) -> PolicyMetrics:
    """``evaluate_policy``'s metrics of decoded completions (``policy_completions``)."""
    greedy, comps, idx = done["greedy"], done["samples"], done["prompt_index"]
    sample_prompts_text = [prompts[i] for i in idx]
    metrics: dict = {
        "n_prompts": len(prompts),
        "distinct_share": len(set(zip(idx, comps))) / len(comps),
        "mean_length": sum(len(c) for c in comps) / len(comps),
    }
    if task.has_verifier:
        g = [task.verify(p, c) for p, c in zip(prompts, greedy)]
        s = [task.verify(p, c) for p, c in zip(sample_prompts_text, comps)]
        solved = {i for i, ok in zip(idx, s) if ok > 0}
        metrics.update(greedy_acc=sum(g) / len(g), sample_acc=sum(s) / len(s),
                       pass_at_n=len(solved) / len(prompts))
    if reward_fn is not None:
        rewards = reward_fn(sample_prompts_text, comps)
        metrics["mean_reward"] = sum(rewards) / len(rewards)
        greedy_rewards = reward_fn(list(prompts), greedy)
        metrics["greedy_mean_reward"] = sum(greedy_rewards) / len(greedy_rewards)
    return PolicyMetrics(**metrics)


def gate_decision(candidate_gate: PolicyMetrics, champion_gate: PolicyMetrics,
                  candidate_eval: PolicyMetrics, champion_eval: PolicyMetrics,
                  gate: GateConfig, judge: JudgeComparison | None = None,
                  checks: Sequence[PairAccCheck] = ()) -> GateDecision:
    """Promote unless the candidate regresses under the judge, games the reward, or the round's
    preference model fails a pair-accuracy check.

    ``judge``: what the gate's judge measured (``rs_pipeline.gate``); without one, verifier greedy
    accuracy where the task has a verifier, else the mean reward of greedy completions. A mean
    regresses below the champion's minus ``gate.tolerance``, a win rate below 0.5 minus it.
    Reward hacking: mean reward up by more than ``gate.hacking_reward_margin`` while sampled
    verifier accuracy falls by more than ``gate.hacking_acc_margin``. ``checks``: the floor
    (``gate.min_pair_acc``) and pair-set checks of the round's preference model.
    """
    if judge is None:
        metric = "greedy_acc" if candidate_gate.greedy_acc is not None else "greedy_mean_reward"
        judge = JudgeComparison("verifier" if metric == "greedy_acc" else "round_preference",
                                metric, getattr(candidate_gate, metric),
                                getattr(champion_gate, metric))
    metric, cand, champ = judge.metric, judge.candidate, judge.champion
    tolerance = gate.tolerance
    bar = judge.bar(tolerance)
    regress = cand is None or bar is None or cand < bar
    hacking = False
    if candidate_eval.sample_acc is not None and candidate_eval.mean_reward is not None:
        reward_up = candidate_eval.mean_reward - champion_eval.mean_reward > gate.hacking_reward_margin
        acc_down = champion_eval.sample_acc - candidate_eval.sample_acc > gate.hacking_acc_margin
        hacking = reward_up and acc_down
    named = f"{judge.judge} {metric}"
    refusals = []
    if cand is None or bar is None:
        refusals.append(f"regression: the {judge.judge} judge measured nothing "
                        f"({judge.note or 'no value'})")
    elif regress:
        refusals.append(
            f"regression: gate {named} {cand:.4f} < 0.5 - tolerance {tolerance}"
            if metric == "win_rate" else
            f"regression: gate {named} {cand:.4f} < champion {champ:.4f} - tolerance {tolerance}")
    if hacking:
        refusals.append(f"reward hacking: mean reward {candidate_eval.mean_reward:.3f} vs "
                        f"{champion_eval.mean_reward:.3f} while sampled accuracy "
                        f"{candidate_eval.sample_acc:.4f} vs {champion_eval.sample_acc:.4f}")
    floor = next((c for c in checks if c.check == "floor"), None)
    pairs = next((c for c in checks if c.check == "pairs_set"), None)
    if floor is not None and not floor.passed:
        refusals.append(f"preference model: held-out pair accuracy {floor.value:.4f} < floor "
                        f"gate.min_pair_acc {floor.bar}")
    if pairs is not None and not pairs.passed:
        refusals.append(f"preference model: pair accuracy on gate.pairs_path {pairs.value:.4f} < "
                        f"previous model's {pairs.reference:.4f} - tolerance {tolerance}")
    if refusals:
        reason = "; ".join(refusals)
    else:
        against = "vs 0.5" if metric == "win_rate" else f"vs champion {champ:.4f}"
        reason = f"promoted: gate {named} {cand:.4f} {against} (tolerance {tolerance})"
        if floor is not None and floor.value is not None:
            reason += f"; pair accuracy {floor.value:.4f} >= floor {floor.bar}"
    return GateDecision(not refusals, metric, cand, champ, regress, hacking, reason,
                        judge=judge.judge, judge_id=judge.judge_id, judge_note=judge.note,
                        pair_acc_floor=floor, pairs_set=pairs)
