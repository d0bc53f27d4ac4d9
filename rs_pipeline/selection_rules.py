"""Selection rules beyond argmax with a threshold; pure (pandas in, pandas out).

``select`` works in this order, whatever the rule:

1. the ranked score: ``selection_score``, z-scored among each prompt's candidates
   (``normalize: prompt``; a prompt whose candidates all score alike gets 0), minus
   ``length_penalty`` times the completion's length in characters;
2. distinct completions per prompt, best first (``selection._ranked``: a duplicate is its
   earliest round's lowest sample; score ties go to the earliest round, then lowest index);
3. the percentile: prompts whose best ranked score is below the round's cut leave (every rule);
4. the rule picks: ``argmax`` the best, ``top_k`` the k best, ``random`` one distinct completion
   drawn from (seed, round, prompt), blind to scores;
5. the absolute ``threshold`` drops picked rows below it.

With the defaults (argmax, no percentile, no normalisation, no penalty) the rows are exactly
``selection.select_best``'s.
"""

from __future__ import annotations

import math

import pandas as pd

from rs_pipeline.config import SelectionConfig
from rs_pipeline.ids import derive_seed, round_number
from rs_pipeline.selection import _ranked


def ranked_scores(df: pd.DataFrame, normalize: str = "none",
                  length_penalty: float = 0.0) -> pd.Series:
    """The score rules rank by (steps 1 above); the selection score itself with the defaults."""
    s = df["selection_score"].astype(float)
    if normalize == "prompt":
        groups = s.groupby(df["prompt_id"])
        mean, std = groups.transform("mean"), groups.transform("std", ddof=0)
        s = ((s - mean) / std.where(std > 1e-12)).fillna(0.0)
    if length_penalty:
        s = s - length_penalty * df["completion"].str.len()
    return s


def kept_percentile(sel: SelectionConfig, round_key: str) -> float | None:
    """The round's percentile: ``percentile`` (100 if unset) minus ``rising_percentile_step`` per
    round after the first, never below ``min_percentile`` (nor above the start); None if off."""
    if sel.percentile is None and not sel.rising_percentile_step:
        return None
    start = 100.0 if sel.percentile is None else float(sel.percentile)
    if not sel.rising_percentile_step:
        return start
    risen = start - sel.rising_percentile_step * (round_number(round_key) - 1)
    return max(risen, min(sel.min_percentile, start))


def percentile_cut(best: pd.Series, percentile: float) -> float:
    """The lowest score in the top ``percentile`` percent of ``best``: the k-th highest, with
    k = ceil(percentile% of the prompts), at least 1. Every score equal to it is kept too."""
    k = max(1, math.ceil(round(percentile * len(best) / 100, 9)))
    return float(best.sort_values(ascending=False).iloc[k - 1])


def _pick(ranked: pd.DataFrame, sel: SelectionConfig, round_key: str, seed: int) -> pd.DataFrame:
    """Step 4: the rule's rows out of each prompt's ranked distinct completions."""
    if sel.rule == "argmax":
        return ranked.groupby("prompt_id", sort=True).head(1)
    if sel.rule == "top_k":
        return ranked.groupby("prompt_id", sort=True).head(sel.top_k)
    by_origin = ranked.sort_values(["prompt_id", "round", "sample_index"], kind="stable")
    position = by_origin.groupby("prompt_id").cumcount()
    size = by_origin.groupby("prompt_id")["prompt_id"].transform("size")
    draw = by_origin["prompt_id"].map(lambda p: derive_seed(seed, round_key, "random_pick", p))
    return by_origin[position == draw % size]


def select(candidates: pd.DataFrame, sel: SelectionConfig, round_key: str,
           seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The kept rows by ``sel`` (see the module doc) and their stats. ``candidates`` are scores
    rows (with best_ever, earlier rounds' rows too: their ``round`` is not ``round_key``); the
    kept rows' ``selection_score`` is the ranked score."""
    scored = candidates.assign(selection_score=ranked_scores(candidates, sel.normalize,
                                                             sel.length_penalty))
    ranked = _ranked(scored)
    n_distinct = len(ranked)
    best = ranked.groupby("prompt_id", sort=True).head(1)
    percentile, dropped_pct = kept_percentile(sel, round_key), 0
    if percentile is not None and len(best):
        cut = percentile_cut(best["selection_score"], percentile)
        survivors = best.loc[best["selection_score"] >= cut, "prompt_id"]
        dropped_pct = len(best) - len(survivors)
        ranked = ranked[ranked["prompt_id"].isin(survivors)]
    picked = _pick(ranked, sel, round_key, seed)
    n_picked = len(picked)
    if sel.threshold is not None:
        picked = picked[picked["selection_score"] >= sel.threshold]
    verified = (picked["verifier_score"].dropna() if "verifier_score" in picked
                else pd.Series(dtype=float))
    stats = {"prompts": len(best), "kept": len(picked),
             "dropped_below_threshold": n_picked - len(picked),
             "dropped_by_percentile": dropped_pct, "percentile": percentile,
             "duplicate_completions": len(candidates) - n_distinct,
             "from_pool": int((picked["round"] != round_key).sum()),
             "kept_precision": float(verified.mean()) if len(verified) else None,
             "mean_length": float(picked["completion"].str.len().mean()) if len(picked) else None}
    return picked.reset_index(drop=True), stats
