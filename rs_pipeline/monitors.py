"""Collapse and reward-hacking monitors: numbers computed from a round's tables and models.

Tables in (pyarrow or pandas), numbers out; ``None`` where a monitor has nothing to measure.
Which value passes is decided by ``judge`` against ``MonitorsConfig``. The Dagster checks on
``round_eval`` (``rs_pipeline.defs.assets.evaluation``) show them; ``steps.monitors`` gathers
them for a round.

- Diversity (``generations``): distinct completions per prompt as a share of its samples,
  distinct-1/-2 over all completions on **words** (whitespace split: a completion without
  spaces, as in the demo tasks, is one word, so distinct-1 is then the share of distinct
  completions overall), and the share of prompts whose samples are all the same.
- Reward hacking (``scores``): Pearson correlation of completion length in characters with the
  reward; with a verifier, the share of prompts where the reward's pick is wrong although a
  right completion existed, and the Spearman correlation of reward and verifier score.
- Drift: KL(policy || base) estimated as the mean over completions sampled from the policy of
  the summed per-token log p_policy - log p_base (teacher forcing).
- The preference model's calibration: expected calibration error of sigmoid(r_a - r_b)
  against held-out labels hp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from rs_pipeline.config import MonitorsConfig
from rs_pipeline.errors import InputError
from rs_pipeline.records import MonitorValue

#: name -> (bound, the MonitorsConfig field holding its threshold). Metric ``monitor/<name>``,
#: check ``monitor_<name>``.
MONITORS: dict[str, tuple[str, str]] = {
    "distinct_share": ("min", "min_distinct_share"),
    "distinct_1": ("min", "min_distinct_1"),
    "distinct_2": ("min", "min_distinct_2"),
    "all_same_share": ("max", "max_all_same_share"),
    "length_reward_corr": ("max", "max_length_reward_corr"),
    "wrong_pick_share": ("max", "max_wrong_pick_share"),
    "reward_verifier_rank_corr": ("min", "min_reward_verifier_rank_corr"),
    "kl_policy_base": ("max", "max_kl"),
    "preference_ece": ("max", "max_ece"),
}


def _frame(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return table.to_pandas() if isinstance(table, pa.Table) else table


def distinct_share(generations: pa.Table | pd.DataFrame) -> float | None:
    """Mean over prompts of (distinct completions / samples of the prompt)."""
    df = _frame(generations)
    if df.empty:
        return None
    per = df.groupby("prompt_id")["completion"].agg(lambda c: c.nunique() / len(c))
    return float(per.mean())


def all_same_share(generations: pa.Table | pd.DataFrame) -> float | None:
    """Share of prompts with two or more samples whose samples are all the same text."""
    df = _frame(generations)
    groups = df.groupby("prompt_id")["completion"].agg(["nunique", "size"])
    groups = groups[groups["size"] >= 2]
    return None if groups.empty else float((groups["nunique"] == 1).mean())


def distinct_n(completions: Sequence[str], n: int) -> float | None:
    """Distinct word n-grams over all completions / all word n-grams (words: whitespace
    split); None when no completion has n words."""
    grams = [tuple(words[i:i + n]) for c in completions
             for words in [c.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than two points or a constant side."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties)."""
    return pearson(pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy())


def length_reward_corr(scores: pa.Table | pd.DataFrame) -> float | None:
    """Pearson correlation of completion length (characters) and reward over all rows."""
    df = _frame(scores)
    return pearson(df["completion"].str.len(), df["reward"])


def _verified(scores: pa.Table | pd.DataFrame) -> pd.DataFrame | None:
    df = _frame(scores)
    if df.empty or df["verifier_score"].isna().any():
        return None
    return df


def wrong_pick_share(scores: pa.Table | pd.DataFrame) -> float | None:
    """Among prompts with a right completion (verifier score > 0), the share whose highest-reward
    completion (first by sample index on ties) is wrong; None without a verifier."""
    df = _verified(scores)
    if df is None:
        return None
    df = df.sort_values(["prompt_id", "sample_index"])
    solvable = df.groupby("prompt_id")["verifier_score"].transform("max") > 0
    df = df[solvable]
    if df.empty:
        return None
    picks = df.loc[df.groupby("prompt_id", sort=False)["reward"].idxmax()]
    return float((picks["verifier_score"] <= 0).mean())


def reward_verifier_rank_corr(scores: pa.Table | pd.DataFrame) -> float | None:
    """Spearman correlation of reward and verifier score over all completions; None without a
    verifier or when either is constant."""
    df = _verified(scores)
    return None if df is None else spearman(df["reward"], df["verifier_score"])


def expected_calibration_error(reward_a: Sequence[float], reward_b: Sequence[float],
                               hp: Sequence[float], bins: int = 5) -> float | None:
    """ECE of p = sigmoid(r_a - r_b) against the labels hp (soft labels count as they are):
    sum over equal-width bins of p of (rows in bin / rows) * |mean p - mean hp|."""
    if len(hp) == 0:
        return None
    diff = np.asarray(reward_a, dtype=float) - np.asarray(reward_b, dtype=float)
    p = 1.0 / (1.0 + np.exp(-diff))
    y = np.asarray(hp, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def completion_logprobs(model, prompt_ids: Sequence[Sequence[int]],
                        completion_ids: Sequence[Sequence[int]], pad_id: int = 0,
                        batch_size: int = 64) -> list[float]:
    """Sum of log p(token | prefix) over each completion's tokens under ``model`` (teacher
    forcing: one forward of prompt + completion, log-softmax, gather)."""
    import torch

    model.eval()
    out: list[float] = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = [list(p) + list(c) for p, c in zip(prompt_ids[start:start + batch_size],
                                                   completion_ids[start:start + batch_size])]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        target = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
            target[i, len(prompt_ids[start + i]):len(r)] = True
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        out += (picked * target[:, 1:]).sum(dim=1).tolist()
    return out


def kl_estimate(policy, base, prompt_ids: Sequence[Sequence[int]],
                completion_ids: Sequence[Sequence[int]], pad_id: int = 0,
                batch_size: int = 64) -> float | None:
    """KL(policy || base) per completion: the mean over completions *sampled from the policy*
    (at temperature 1, no top-k/top-p) of log p_policy(completion) - log p_base(completion).
    Zero when the two are the same model; None without completions."""
    if not completion_ids:
        return None
    lp = completion_logprobs(policy, prompt_ids, completion_ids, pad_id, batch_size)
    lb = completion_logprobs(base, prompt_ids, completion_ids, pad_id, batch_size)
    return float(np.mean(np.asarray(lp) - np.asarray(lb)))


def table_monitors(generations: pa.Table, scores: pa.Table) -> dict[str, float | None]:
    """The monitors computed from a round's tables alone."""
    completions = generations.column("completion").to_pylist()
    return {"distinct_share": distinct_share(generations),
            "distinct_1": distinct_n(completions, 1), "distinct_2": distinct_n(completions, 2),
            "all_same_share": all_same_share(generations),
            "length_reward_corr": length_reward_corr(scores),
            "wrong_pick_share": wrong_pick_share(scores),
            "reward_verifier_rank_corr": reward_verifier_rank_corr(scores)}


def blocking_names(cfg: MonitorsConfig) -> list[str]:
    """The monitors ``monitors.blocking`` names; an unknown name is an InputError."""
    names = [n.strip() for n in cfg.blocking.split(",") if n.strip()]
    unknown = [n for n in names if n not in MONITORS]
    if unknown:
        raise InputError(f"setting monitors.blocking: unknown monitor(s) {', '.join(unknown)} "
                         f"(known: {', '.join(MONITORS)})")
    return names


def judge(values: dict[str, float | None], cfg: MonitorsConfig) -> list[MonitorValue]:
    """Each monitor against its threshold; one not measured (None, NaN) passes."""
    blocking = set(blocking_names(cfg))
    out = []
    for name, (bound, setting) in MONITORS.items():
        value = values.get(name)
        if value is not None and math.isnan(value):
            value = None
        threshold = float(getattr(cfg, setting))
        sign = ">=" if bound == "min" else "<="
        if value is None:
            passed, reason = True, f"{name}: not measured"
        else:
            passed = value >= threshold if bound == "min" else value <= threshold
            reason = (f"{name} {value:.4f} {sign} monitors.{setting} {threshold}" if passed else
                      f"{name} {value:.4f} fails {sign} monitors.{setting} {threshold}")
        out.append(MonitorValue(name, value, bound, threshold, passed, name in blocking, reason))
    return out
