"""Evaluating a policy on held-out prompts, and the promotion gate's decision."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rs_pipeline.chat import ChatMode, prompt_kwargs
from rs_pipeline.config import GateConfig
from rs_pipeline.generation import SamplingParams, sample_prompts
from rs_pipeline.ids import derive_seed, prompt_id
from rs_pipeline.records import GateDecision, PolicyMetrics
from rs_pipeline.tasks.base import Task

Scorer = Callable[[Sequence[str], Sequence[str]], list[float]]


def evaluate_policy(model, tokenizer, task: Task, prompts: Sequence[str], params: SamplingParams,
                    reward_fn: Scorer | None, seed: int, batch_prompts: int = 256,
                    sampled: bool = True, chat_template: ChatMode = "auto") -> PolicyMetrics:
    """Greedy and sampled metrics of a policy on ``prompts``.

    ``greedy_acc`` (verifier, greedy decoding), ``sample_acc`` (mean over N samples at the
    sampling temperature), ``pass_at_n``, ``mean_reward`` (``reward_fn`` over the samples),
    ``distinct_share`` (distinct completions / N, averaged over prompts), ``mean_length``
    (characters). Verifier metrics are None when the task has no verifier. ``sampled=False``
    measures greedy decoding only (the sampled metrics then describe the greedy answers).
    Sample ``s`` of a prompt is seeded by (seed, "eval", prompt id, s): the same draw for the
    candidate and the champion, on any batch layout. Prompts are rendered as for sampling
    (``chat_template``: the policy's chat template, see ``rs_pipeline.chat``).
    """
    chat = prompt_kwargs(model, tokenizer, prompts, chat_template)
    greedy = sample_prompts(model, tokenizer, prompts, SamplingParams(
        n=1, temperature=0.0, max_new_tokens=params.max_new_tokens), lambda p, s: 0, batch_prompts,
        **chat)
    pids = [prompt_id(p) for p in prompts]
    samples = (sample_prompts(model, tokenizer, prompts, params,
                              lambda p, s: derive_seed(seed, "eval", pids[p], s), batch_prompts,
                              **chat)
               if sampled else greedy)
    comps, idx = samples["completion"], samples["prompt_index"]
    sample_prompts_text = [prompts[i] for i in idx]
    metrics: dict = {
        "n_prompts": len(prompts),
        "distinct_share": len(set(zip(idx, comps))) / len(comps),
        "mean_length": sum(len(c) for c in comps) / len(comps),
    }
    if task.has_verifier:
        g = [task.verify(p, c) for p, c in zip(prompts, greedy["completion"])]
        s = [task.verify(p, c) for p, c in zip(sample_prompts_text, comps)]
        solved = {i for i, ok in zip(idx, s) if ok > 0}
        metrics.update(greedy_acc=sum(g) / len(g), sample_acc=sum(s) / len(s),
                       pass_at_n=len(solved) / len(prompts))
    if reward_fn is not None:
        rewards = reward_fn(sample_prompts_text, comps)
        metrics["mean_reward"] = sum(rewards) / len(rewards)
        greedy_rewards = reward_fn(list(prompts), greedy["completion"])
        metrics["greedy_mean_reward"] = sum(greedy_rewards) / len(greedy_rewards)
    return PolicyMetrics(**metrics)


def gate_decision(candidate_gate: PolicyMetrics, champion_gate: PolicyMetrics,
                  candidate_eval: PolicyMetrics, champion_eval: PolicyMetrics,
                  gate: GateConfig) -> GateDecision:
    """Promote unless the candidate regresses on the gate set or games the reward.

    The gate metric is verifier greedy accuracy where the task has a verifier, else the mean
    reward of greedy completions. Reward hacking: mean reward up by more than
    ``gate.hacking_reward_margin`` while sampled verifier accuracy falls by more than
    ``gate.hacking_acc_margin``.
    """
    metric = "greedy_acc" if candidate_gate.greedy_acc is not None else "greedy_mean_reward"
    cand, champ = float(getattr(candidate_gate, metric)), float(getattr(champion_gate, metric))
    tolerance = gate.tolerance
    regress = cand < champ - tolerance
    hacking = False
    if candidate_eval.sample_acc is not None and candidate_eval.mean_reward is not None:
        reward_up = candidate_eval.mean_reward - champion_eval.mean_reward > gate.hacking_reward_margin
        acc_down = champion_eval.sample_acc - candidate_eval.sample_acc > gate.hacking_acc_margin
        hacking = reward_up and acc_down
    if regress:
        reason = (f"regression: gate {metric} {cand:.4f} < champion {champ:.4f} - tolerance "
                  f"{tolerance}")
    elif hacking:
        reason = (f"reward hacking: mean reward {candidate_eval.mean_reward:.3f} vs "
                  f"{champion_eval.mean_reward:.3f} while sampled accuracy "
                  f"{candidate_eval.sample_acc:.4f} vs {champion_eval.sample_acc:.4f}")
    else:
        reason = f"promoted: gate {metric} {cand:.4f} vs champion {champ:.4f} (tolerance {tolerance})"
    return GateDecision(not (regress or hacking), metric, cand, champ, regress, hacking, reason)
