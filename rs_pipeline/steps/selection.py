"""Round steps that select: the SFT set (best per prompt) and DPO pairs (best vs worst)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from rs_pipeline.context import RunContext
from rs_pipeline.schemas import make_table
from rs_pipeline.selection import dpo_pairs, select_best

SFT_COLUMNS = ("round", "prompt_id", "prompt", "completion", "generation_id", "selection_score",
               "reward", "verifier_score", "policy_id", "reward_model_id")


def sft_dataset(ctx: RunContext, scores: pa.Table) -> tuple[pa.Table, dict]:
    """The best completion per prompt by the configured selector (``prompt``/``completion``)."""
    best, stats = select_best(scores.to_pandas(), ctx.settings.selection.threshold)
    data = {c: best[c].tolist() for c in SFT_COLUMNS}
    data["verifier_score"] = [None if pd.isna(v) else float(v) for v in data["verifier_score"]]
    table = make_table("sft_dataset", data)
    verified = [v for v in data["verifier_score"] if v is not None]
    precision = sum(verified) / len(verified) if verified else None
    spread = best["reward_spread"].mean() if len(best) else None
    return table, {"select/kept": stats["kept"], "select/prompts": stats["prompts"],
                   "select/kept_mean_spread": None if spread is None else float(spread),
                   "select/dropped_below_threshold": stats["dropped_below_threshold"],
                   "select/duplicate_completions": stats["duplicate_completions"],
                   "select/kept_precision": precision}


def dpo_dataset(ctx: RunContext, scores: pa.Table) -> tuple[pa.Table, dict]:
    """Best vs worst distinct completion per prompt (``prompt``/``chosen``/``rejected``)."""
    df = dpo_pairs(scores.to_pandas(), ctx.settings.selection.dpo_min_margin)
    table = make_table("dpo_pairs", {c: df[c].tolist() for c in df.columns})
    return table, {"select/dpo_pairs": table.num_rows}
