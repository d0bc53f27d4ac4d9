"""Best-of-N selection: the best response per prompt becomes SFT data; best-vs-worst DPO pairs.

Deterministic: identical completions of a prompt collapse to their first sample; score ties go
to the lowest sample index; duplicate prompts (same ``prompt_id``) are one group.
"""

from __future__ import annotations

import math

import pandas as pd


def conservative(reward, spread, penalty: float):
    """The preference model's conservative score: mean reward - ``penalty`` * spread over its
    heads (the reward itself at penalty 0)."""
    return reward - penalty * spread if penalty else reward


def selection_scores(reward: pd.Series, verifier: pd.Series, selector: str,
                     mix_weight: float, spread: pd.Series | None = None,
                     penalty: float = 0.0) -> pd.Series:
    """The score selection ranks by: the reward, the verifier's score, or a weighted mix
    (``mix_weight`` on the verifier). The reward part is conservative with a ``penalty`` on the
    heads' ``spread``. Settings are checked when the run context loads."""
    reward = reward.astype(float)
    if spread is not None:
        reward = conservative(reward, spread.astype(float), penalty)
    if selector == "preference":
        return reward
    if selector == "verifier":
        return verifier.astype(float)
    return (1 - mix_weight) * reward + mix_weight * verifier.astype(float)


def _ranked(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct (prompt_id, completion), best first within each prompt (a duplicate
    is its earliest round's lowest sample; score ties go to it too)."""
    order = ["prompt_id", "round", "sample_index"] if "round" in scores else ["prompt_id",
                                                                             "sample_index"]
    dedup = scores.sort_values(order, kind="stable").drop_duplicates(
        ["prompt_id", "completion"], keep="first"
    )
    return dedup.sort_values(
        ["prompt_id", "selection_score", "sample_index"], ascending=[True, False, True],
        kind="stable",
    )


def select_best(scores: pd.DataFrame, threshold: float | None) -> tuple[pd.DataFrame, dict]:
    """The best completion per prompt, kept only if its score reaches ``threshold``."""
    ranked = _ranked(scores)
    best = ranked.groupby("prompt_id", sort=True).head(1)
    n_prompts = len(best)
    if threshold is not None:
        best = best[best["selection_score"] >= threshold]
    stats = {"prompts": n_prompts, "kept": len(best),
             "dropped_below_threshold": n_prompts - len(best),
             "duplicate_completions": len(scores) - len(ranked)}
    return best.reset_index(drop=True), stats


def dpo_pairs(scores: pd.DataFrame, min_margin: float, per_prompt: int = 1,
              pairing: str = "score") -> pd.DataFrame:
    """DPO pairs per prompt over its distinct completions. ``score``: the best against each of
    the ``per_prompt`` worst, when the score margin is at least ``min_margin`` and positive (ties
    never make a pair). ``verifier``: the best-scored right completion (verifier score 1) against
    each of the ``per_prompt`` best-scored wrong ones (the ones selection could mistake for
    right), whatever their score margin. Rows: by prompt, each prompt's worst rejected first."""
    ranked = _ranked(scores)
    if pairing == "verifier":
        right = ranked["verifier_score"].astype(float) >= 1.0
        wrong = ranked["verifier_score"].astype(float) < 1.0  # a missing score is neither
        best = ranked[right].groupby("prompt_id", sort=True).head(1)
        others = ranked[wrong].groupby("prompt_id", sort=True).head(per_prompt)
        others = others.iloc[::-1].sort_values("prompt_id", kind="stable")
        keep_margin = None
    else:
        groups = ranked.groupby("prompt_id", sort=True)
        best = groups.head(1)
        rank = groups.cumcount()
        others = ranked[rank >= 1].groupby("prompt_id", sort=True).tail(per_prompt)
        others = others.iloc[::-1].sort_values("prompt_id", kind="stable")
        keep_margin = min_margin
    out = others.merge(best, on="prompt_id", suffixes=("_rejected", "_chosen"), sort=False)
    margin = out["selection_score_chosen"] - out["selection_score_rejected"]
    keep = out["completion_chosen"] != out["completion_rejected"]
    if keep_margin is not None:
        keep &= margin > 0
        keep &= margin >= keep_margin if not math.isnan(keep_margin) else True
    out = out[keep].assign(margin=margin[keep]).reset_index(drop=True)
    return pd.DataFrame({
        "round": out["round_chosen"], "prompt_id": out["prompt_id"],
        "prompt": out["prompt_chosen"], "chosen": out["completion_chosen"],
        "rejected": out["completion_rejected"], "score_chosen": out["selection_score_chosen"],
        "score_rejected": out["selection_score_rejected"], "margin": out["margin"],
        "policy_id": out["policy_id_chosen"], "reward_model_id": out["reward_model_id_chosen"],
    })
