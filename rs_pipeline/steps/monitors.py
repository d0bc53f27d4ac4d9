"""The round's collapse and reward-hacking monitors (``rs_pipeline.monitors``), judged against
``monitors.*``."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc

from rs_pipeline import monitors
from rs_pipeline.chat import end_of_turn_id, prompt_kwargs
from rs_pipeline.context import RunContext
from rs_pipeline.generation import SamplingParams, sample_prompts
from rs_pipeline.ids import sample_seed, seeded_rng
from rs_pipeline.preference import score
from rs_pipeline.records import (
    MonitorReport,
    PolicyCheckpoint,
    PreferenceCheckpoint,
    RoundEvaluation,
)


def round_monitors(ctx: RunContext, generations: pa.Table, scores: pa.Table, labels: pa.Table,
                   reward_model: PreferenceCheckpoint, candidate: PolicyCheckpoint,
                   base: PolicyCheckpoint, round_key: str) -> tuple[MonitorReport, dict]:
    """Every monitor of a round, judged; metrics ``monitor/<name>`` (and ``monitor/<name>_ok``)."""
    cfg = ctx.settings.monitors
    values = monitors.table_monitors(generations, scores)
    values["preference_ece"] = _ece(ctx, labels, reward_model, cfg.ece_bins)
    kl, drawn = _kl(ctx, generations, candidate, base, round_key, cfg.kl_samples)
    values["kl_policy_base"] = kl
    report = MonitorReport(round_key, monitors.judge(values, cfg), drawn)
    metrics = {f"monitor/{m.name}": m.value for m in report.monitors}
    metrics.update({f"monitor/{m.name}_ok": int(m.passed) for m in report.monitors})
    return report, metrics


def _ece(ctx: RunContext, labels: pa.Table, reward_model: PreferenceCheckpoint,
         bins: int) -> float | None:
    """Calibration of the round's preference model on the round's held-out labelled pairs."""
    held = labels.filter(pc.equal(labels.column("split"), "heldout")).to_pydict()
    if not held["hp"]:
        return None
    model, tok = ctx.load_preference(reward_model)
    prompts = held["prompt"]
    ra = score(model, tok, prompts, held["completion_a"])
    rb = score(model, tok, prompts, held["completion_b"])
    return monitors.expected_calibration_error(ra, rb, held["hp"], bins)


def _kl(ctx: RunContext, generations: pa.Table, candidate: PolicyCheckpoint,
        base: PolicyCheckpoint, round_key: str, samples: int) -> tuple[float | None, int]:
    """KL(candidate || base): ``samples`` prompts drawn (seeded, with replacement) from the
    round's generations, one completion each sampled from the candidate at temperature 1,
    scored under both with the prompt rendered as sampling renders it. The round's own
    completions come from the champion, not the candidate: their mean log-ratio is not this KL
    (in round 1 it is minus KL(base || candidate))."""
    prompts = generations.column("prompt").to_pylist()
    if samples == 0 or not prompts:
        return None, 0
    rng = seeded_rng(ctx.settings.seed, round_key, "monitors-kl")
    chosen = [prompts[rng.randrange(len(prompts))] for _ in range(samples)]
    policy, tok = ctx.load_policy(candidate)
    chat = ctx.settings.policy.chat_template
    kw = prompt_kwargs(policy, tok, chosen, chat)
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=ctx.sampling.max_new_tokens)
    seed = ctx.settings.seed
    out = sample_prompts(policy, tok, chosen, params,
                         lambda p, s: sample_seed(seed, round_key, f"monitors-kl-{p}", s),
                         ctx.settings.generation.batch_prompts, **kw)
    end = [end_of_turn_id(tok, chat)]  # what sampling stopped at, when it finished
    completion_ids = [tok(text, add_special_tokens=False)["input_ids"] + (end if done else [])
                      for text, done in zip(out["completion"], out["finished"])]
    prompt_ids = [kw["prompt_ids"][i] for i in out["prompt_index"]]
    base_model, _ = ctx.load_policy(base)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    kl = monitors.kl_estimate(policy, base_model, prompt_ids, completion_ids, pad)
    return kl, len(completion_ids)


def refuse_for_monitors(evaluation: RoundEvaluation, metrics: dict,
                        report: MonitorReport) -> tuple[RoundEvaluation, dict]:
    """The round's evaluation with its gate decision refused when a blocking monitor failed
    (reason: the gate's, then each failed monitor's); ``metrics`` follow (gate/promoted 0)."""
    failed = report.failed_blocking()
    if not failed:
        return evaluation, metrics
    d = evaluation.decision
    why = "; ".join(f"monitor {m.reason}" for m in failed)
    reason = why if d.promoted else f"{d.reason}; {why}"
    decision = dataclasses.replace(d, promoted=False, reason=reason)
    metrics = {**metrics, "gate/promoted": 0} if metrics else metrics
    return dataclasses.replace(evaluation, decision=decision), metrics
