"""Round steps that select: the SFT set (by the selection rule) and DPO pairs (best vs worst)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from rs_pipeline.context import RunContext
from rs_pipeline.preference import mean_and_spread, score_heads
from rs_pipeline.records import PreferenceCheckpoint
from rs_pipeline.schemas import make_table
from rs_pipeline.selection import dpo_pairs, selection_scores
from rs_pipeline.selection_rules import select

SFT_COLUMNS = ("round", "prompt_id", "prompt", "completion", "generation_id", "selection_score",
               "reward", "verifier_score", "policy_id", "reward_model_id")


def pool_candidates(ctx: RunContext, earlier: Sequence[pa.Table],
                    reward_model: PreferenceCheckpoint) -> pd.DataFrame:
    """Best-ever pool: every earlier round's kept rows (each distinct prompt/completion once, from
    the round that first kept it), rescored by ``reward_model`` as ``scores`` rows are. They keep
    their origin (round, generation_id, policy_id); ``sample_index`` -1 puts them first on ties."""
    tables = [t.to_pandas() for t in earlier if t.num_rows]
    if not tables:
        return pd.DataFrame()
    pool = pd.concat(tables, ignore_index=True).sort_values("round", kind="stable")
    pool = pool.drop_duplicates(["prompt_id", "completion"], keep="first").reset_index(drop=True)
    model, tok = ctx.load_preference(reward_model)
    reward, spread = mean_and_spread(score_heads(model, tok, pool["prompt"].tolist(),
                                                 pool["completion"].tolist()))
    sel = ctx.settings.selection
    reward, spread = pd.Series(reward, dtype="float64"), pd.Series(spread, dtype="float64")
    return pool.assign(
        sample_index=-1, reward=reward, reward_spread=spread, reward_model_id=reward_model.id,
        selection_score=selection_scores(reward, pool["verifier_score"].astype("float64"),
                                         sel.selector, sel.mix_weight, spread,
                                         sel.uncertainty_penalty))


def sft_dataset(ctx: RunContext, scores: pa.Table, round_key: str | None = None,
                earlier: Sequence[pa.Table] = (),
                reward_model: PreferenceCheckpoint | None = None) -> tuple[pa.Table, dict]:
    """The kept completions by the configured selector and rule (``prompt``/``completion``);
    with ``selection.best_ever``, earlier rounds' kept rows (``earlier``) rescored by
    ``reward_model`` compete too (``selection_rules.select``)."""
    sel = ctx.settings.selection
    candidates = scores.to_pandas()
    round_key = round_key or (candidates["round"].iloc[0] if len(candidates) else "r0001")
    if sel.best_ever and earlier:
        if reward_model is None:
            raise ValueError("selection.best_ever needs the round's preference model to rescore")
        pool = pool_candidates(ctx, earlier, reward_model)
        candidates = pd.concat([pool, candidates], ignore_index=True) if len(pool) else candidates
    kept, stats = select(candidates, sel, round_key, ctx.settings.seed)
    data = {c: kept[c].tolist() for c in SFT_COLUMNS}
    data["verifier_score"] = [None if pd.isna(v) else float(v) for v in data["verifier_score"]]
    table = make_table("sft_dataset", data)
    spread = kept["reward_spread"].mean() if len(kept) else None
    return table, {"select/kept": stats["kept"], "select/prompts": stats["prompts"],
                   "select/kept_mean_spread": None if spread is None else float(spread),
                   "select/dropped_below_threshold": stats["dropped_below_threshold"],
                   "select/dropped_by_percentile": stats["dropped_by_percentile"],
                   "select/percentile": stats["percentile"],
                   "select/from_pool": stats["from_pool"],
                   "select/mean_length": stats["mean_length"],
                   "select/duplicate_completions": stats["duplicate_completions"],
                   "select/kept_precision": stats["kept_precision"]}


def dpo_dataset(ctx: RunContext, scores: pa.Table) -> tuple[pa.Table, dict]:
    """Best vs worst distinct completion(s) per prompt (``prompt``/``chosen``/``rejected``), by
    score or across verifier outcomes (``selection.dpo_pairing``)."""
    sel = ctx.settings.selection
    df = dpo_pairs(scores.to_pandas(), sel.dpo_min_margin, sel.dpo_pairs_per_prompt,
                   sel.dpo_pairing)
    table = make_table("dpo_pairs", {c: df[c].tolist() for c in df.columns})
    return table, {"select/dpo_pairs": table.num_rows}
