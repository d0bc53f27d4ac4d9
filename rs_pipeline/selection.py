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


def dpo_pairs(scores: pd.DataFrame, min_margin: float) -> pd.DataFrame:
    """Best vs worst distinct completion per prompt, when the score margin is at least
    ``min_margin`` and positive (ties never make a pair)."""
    ranked = _ranked(scores)
    groups = ranked.groupby("prompt_id", sort=True)
    best, worst = groups.head(1).set_index("prompt_id"), groups.tail(1).set_index("prompt_id")
    out = best.join(worst, lsuffix="_chosen", rsuffix="_rejected")
    margin = out["selection_score_chosen"] - out["selection_score_rejected"]
    keep = (out["completion_chosen"] != out["completion_rejected"]) & (margin > 0)
    keep &= margin >= min_margin if not math.isnan(min_margin) else True
    out = out[keep].assign(margin=margin[keep]).reset_index()
    return pd.DataFrame({
        "round": out["round_chosen"], "prompt_id": out["prompt_id"],
        "prompt": out["prompt_chosen"], "chosen": out["completion_chosen"],
        "rejected": out["completion_rejected"], "score_chosen": out["selection_score_chosen"],
        "score_rejected": out["selection_score_rejected"], "margin": out["margin"],
        "policy_id": out["policy_id_chosen"], "reward_model_id": out["reward_model_id_chosen"],
    })
