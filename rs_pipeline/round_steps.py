"""A round's steps at the level of tables: each takes Arrow tables and plain values, returns tables.

The Dagster assets call these; nothing here knows about Dagster or MLflow.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from rs_pipeline.errors import InputError
from rs_pipeline.generation import SamplingParams, sample_prompts
from rs_pipeline.ids import config_hash, normalize_prompt, prompt_id, sample_seed
from rs_pipeline.pairs import distinct_pairs
from rs_pipeline.preference import score
from rs_pipeline.schemas import make_table
from rs_pipeline.selection import dpo_pairs, select_best, selection_scores
from rs_pipeline.tasks.base import Task


def build_prompt_sets(prompts: Sequence[str], eval_size: int, gate_size: int,
                      seed: int) -> tuple[pa.Table, pa.Table, dict]:
    """De-duplicate prompts (by normalized text) and hold out eval and gate sets.

    Returns (prompt_pool, eval_prompts, stats). The pool never contains a held-out prompt.
    """
    seen: dict[str, str] = {}
    for i, text in enumerate(prompts):
        if not normalize_prompt(text):
            raise InputError(f"prompt at row {i} is empty")
        seen.setdefault(prompt_id(text), text)
    ids = sorted(seen)
    if eval_size + gate_size >= len(ids):
        raise InputError(
            f"settings task.eval_size + task.gate_size ({eval_size + gate_size}) must be below "
            f"the number of distinct prompts ({len(ids)})"
        )
    random.Random(seed).shuffle(ids)
    held_eval, held_gate, pool = ids[:eval_size], ids[eval_size : eval_size + gate_size], ids[
        eval_size + gate_size :]
    pool_t = make_table("prompt_pool", {"prompt_id": pool, "prompt": [seen[i] for i in pool]})
    held = held_eval + held_gate
    eval_t = make_table("eval_prompts", {
        "prompt_id": held, "prompt": [seen[i] for i in held],
        "split": ["eval"] * len(held_eval) + ["gate"] * len(held_gate),
    })
    stats = {"input_prompts": len(prompts), "duplicates": len(prompts) - len(ids),
             "pool": len(pool), "eval": len(held_eval), "gate": len(held_gate)}
    return pool_t, eval_t, stats


def draw_round_prompts(pool: pa.Table, round_key: str, size: int, seed: int) -> pa.Table:
    """``size`` prompts from the pool without replacement, seeded by (seed, round)."""
    n = pool.num_rows
    idx = sorted(random.Random(f"{seed}|{round_key}").sample(range(n), min(size, n)))
    sub = pool.take(idx)
    return make_table("round_prompts", {"round": [round_key] * len(idx),
                                        "prompt_id": sub.column("prompt_id").to_pylist(),
                                        "prompt": sub.column("prompt").to_pylist()})


def generate(model, tokenizer, prompts: pa.Table, params: SamplingParams, policy_id: str,
             round_key: str, seed: int, batch_prompts: int) -> tuple[pa.Table, dict]:
    """N samples per prompt with per-sample seeds; every row carries its lineage."""
    pids, texts = prompts.column("prompt_id").to_pylist(), prompts.column("prompt").to_pylist()
    out = sample_prompts(model, tokenizer, texts, params,
                         lambda p, s: sample_seed(seed, round_key, pids[p], s), batch_prompts)
    rows = len(out["completion"])
    row_pid = [pids[i] for i in out["prompt_index"]]
    table = make_table("generations", {
        "generation_id": [f"g-{config_hash([policy_id, p, s])[:12]}"
                          for p, s in zip(row_pid, out["seed"])],
        "round": [round_key] * rows, "prompt_id": row_pid,
        "prompt": [texts[i] for i in out["prompt_index"]],
        "sample_index": out["sample_index"], "completion": out["completion"],
        "num_tokens": out["num_tokens"], "finished": out["finished"], "seed": out["seed"],
        "policy_id": [policy_id] * rows, "temperature": [params.temperature] * rows,
        "top_k": [params.top_k] * rows, "top_p": [params.top_p] * rows,
        "max_new_tokens": [params.max_new_tokens] * rows,
    })
    return table, {"tokens_per_s": out["tokens_per_s"], "seconds": out["seconds"]}


def label_round_pairs(generations: pa.Table, annotator, n_pairs: int, heldout_fraction: float,
                      seed: int, round_key: str,
                      scores: Sequence[float] | None = None) -> pa.Table:
    """Pairs of distinct completions from this round's samples, labelled by the annotator.

    With ``scores`` (the previous preference model's), each prompt's first pair puts its
    top-scored completion against another (``pairs.distinct_pairs``). Pairs the annotator cannot
    label (a file without them) are left out; a seeded share is marked ``heldout`` for measuring
    pair accuracy.
    """
    g = generations.to_pydict()
    picks = distinct_pairs(g["prompt_id"], g["completion"], n_pairs,
                           seed=hash_seed(seed, round_key), scores=scores)
    triples = [(g["prompt"][a], g["completion"][a], g["completion"][b]) for a, b in picks]
    labels = annotator.label(triples, salt=round_key)
    keep = [(ab, t, hp) for ab, t, hp in zip(picks, triples, labels) if hp is not None]
    rng = random.Random(f"{seed}|{round_key}|heldout")
    split = ["heldout" if rng.random() < heldout_fraction else "train" for _ in keep]
    return make_table("preference_labels", {
        "round": [round_key] * len(keep),
        "prompt_id": [g["prompt_id"][a] for (a, _), _, _ in keep],
        "prompt": [t[0] for _, t, _ in keep], "completion_a": [t[1] for _, t, _ in keep],
        "completion_b": [t[2] for _, t, _ in keep],
        "generation_id_a": [g["generation_id"][a] for (a, _), _, _ in keep],
        "generation_id_b": [g["generation_id"][b] for (_, b), _, _ in keep],
        "hp": [hp for _, _, hp in keep], "annotator": [annotator.source] * len(keep),
        "policy_id": [g["policy_id"][a] for (a, _), _, _ in keep], "split": split,
    })


def hash_seed(seed: int, round_key: str) -> int:
    return int(config_hash([seed, round_key]), 16) & 0x7FFFFFFF


def seed_preference_table(task: Task, prompts: Sequence[str], n: int, annotator,
                          seed: int) -> pa.Table:
    """Labelled synthetic pairs (right answer, systematic bug, random corruption) for the first
    preference model."""
    triples = task.seed_pairs(prompts, n, seed)
    labels = annotator.label(triples, salt="seed")
    rows = [(t, hp) for t, hp in zip(triples, labels) if hp is not None]
    return make_table("seed_preferences", {
        "prompt_id": [prompt_id(t[0]) for t, _ in rows], "prompt": [t[0] for t, _ in rows],
        "completion_a": [t[1] for t, _ in rows], "completion_b": [t[2] for t, _ in rows],
        "hp": [hp for _, hp in rows], "annotator": [annotator.source] * len(rows),
    })


def labelled_pairs(table: pa.Table) -> list[tuple[str, str, str, float]]:
    d = table.select(["prompt", "completion_a", "completion_b", "hp"]).to_pydict()
    return list(zip(d["prompt"], d["completion_a"], d["completion_b"], d["hp"]))


def score_generations(generations: pa.Table, reward_model, tokenizer, reward_model_id: str,
                      task: Task, selector: str, mix_weight: float) -> pa.Table:
    """Every generation's reward, its verifier score (if the task has one) and selection score."""
    g = generations.to_pydict()
    rewards = score(reward_model, tokenizer, g["prompt"], g["completion"])
    verifier = ([task.verify(p, c) for p, c in zip(g["prompt"], g["completion"])]
                if task.has_verifier else [None] * len(rewards))
    sel = selection_scores(pd.Series(rewards), pd.Series(verifier, dtype="float64"), selector,
                           mix_weight)
    keep = ("generation_id", "round", "prompt_id", "prompt", "sample_index", "completion",
            "policy_id")
    return make_table("scores", {**{k: g[k] for k in keep},
                                 "reward_model_id": [reward_model_id] * len(rewards),
                                 "reward": rewards, "verifier_score": verifier,
                                 "selection_score": sel.tolist()})


def build_sft_dataset(scores: pa.Table, threshold: float | None) -> tuple[pa.Table, dict]:
    best, stats = select_best(scores.to_pandas(), threshold)
    cols = ("round", "prompt_id", "prompt", "completion", "generation_id", "selection_score",
            "reward", "verifier_score", "policy_id", "reward_model_id")
    data = {c: best[c].tolist() for c in cols}
    data["verifier_score"] = [None if pd.isna(v) else float(v) for v in data["verifier_score"]]
    table = make_table("sft_dataset", data)
    if table.num_rows and table.column("verifier_score").null_count < table.num_rows:
        stats["kept_precision"] = float(pd.Series(data["verifier_score"]).mean())
    return table, stats


def build_dpo_pairs(scores: pa.Table, min_margin: float) -> pa.Table:
    df = dpo_pairs(scores.to_pandas(), min_margin)
    return make_table("dpo_pairs", {c: df[c].tolist() for c in df.columns})
