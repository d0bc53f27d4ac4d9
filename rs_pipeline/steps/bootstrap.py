"""Bootstrap steps: prompt sets, the round-0 policy, seed preference pairs."""

from __future__ import annotations

import random

import pyarrow as pa

from rs_pipeline.annotators import FileAnnotator, label_columns
from rs_pipeline.context import RunContext
from rs_pipeline.errors import InputError
from rs_pipeline.ids import config_hash, normalize_prompt, prompt_id, table_version
from rs_pipeline.modeling import load_policy
from rs_pipeline.pairs import heldout_split
from rs_pipeline.pretrain import pretrain_base_policy
from rs_pipeline.records import PolicyCheckpoint
from rs_pipeline.resume import Resume
from rs_pipeline.schemas import make_table


def build_prompt_sets(prompts: list[str], eval_size: int, gate_size: int,
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
            f"the number of distinct prompts ({len(ids)})")
    random.Random(seed).shuffle(ids)
    held_eval, held_gate = ids[:eval_size], ids[eval_size:eval_size + gate_size]
    pool = ids[eval_size + gate_size:]
    pool_t = make_table("prompt_pool", {"prompt_id": pool, "prompt": [seen[i] for i in pool]})
    held = held_eval + held_gate
    eval_t = make_table("eval_prompts", {
        "prompt_id": held, "prompt": [seen[i] for i in held],
        "split": ["eval"] * len(held_eval) + ["gate"] * len(held_gate)})
    stats = {"input_prompts": len(prompts), "duplicates": len(prompts) - len(ids),
             "pool": len(pool), "eval": len(held_eval), "gate": len(held_gate)}
    return pool_t, eval_t, stats


def prompt_sets(ctx: RunContext) -> tuple[pa.Table, pa.Table, dict]:
    t = ctx.settings.task
    return build_prompt_sets(ctx.task.prompts(), t.eval_size, t.gate_size, ctx.settings.seed)


def base_policy(ctx: RunContext, pool: pa.Table,
                resume: Resume | None = None) -> tuple[PolicyCheckpoint, dict]:
    """Your own checkpoint folder, or the demo's tiny GPT-2 pretrained on the task's bugged
    data. Cached by config: the same config does no new work (``base/reused`` = 1)."""
    cfg = ctx.settings
    key = config_hash([cfg.task.name, cfg.seed, cfg.section_dict("policy"), table_version(pool),
                       *ctx.task_code.values()])
    record = ctx.checkpoints.cached("policies", key, PolicyCheckpoint)
    reused = record is not None
    if record is None:
        if cfg.policy.base_path:
            model, tok = load_policy(cfg.policy.base_path)
            loss = None
        else:
            model, tok, metrics = pretrain_base_policy(
                ctx.task, pool.column("prompt").to_pylist(), cfg.policy, cfg.seed,
                **(resume.checkpointing() if resume else {}))
            loss = metrics["train_loss"]
        model_id, path = ctx.checkpoints.save(model, tok, "policies", "pol")
        record = PolicyCheckpoint(id=model_id, path=path, source=cfg.policy.base_path or
                                  "demo-pretraining", train_loss=loss)
        ctx.checkpoints.remember("policies", key, record)
    return record, {"base/pretrain_loss": record.train_loss, "base/reused": int(reused)}


def seed_preferences(ctx: RunContext, pool: pa.Table) -> tuple[pa.Table, dict]:
    """Labelled pairs for the first preference model: a judgement file, or synthetic pairs
    (right answer, systematic bug, random corruption) labelled by the annotator. A seeded share
    is marked ``heldout`` by the same rule as every round's pairs."""
    cfg, pc = ctx.settings, ctx.settings.preference
    stats: dict = {}
    if pc.seed_labels_path:
        annotator = FileAnnotator(pc.seed_labels_path, cfg.inputs.quarantine)
        rows = annotator.all_pairs()
        stats = {f"quarantined_{k}": v for k, v in annotator.quarantined.items()}
    else:
        annotator = ctx.annotator
        triples = ctx.task.seed_pairs(pool.column("prompt").to_pylist(), pc.seed_pairs, cfg.seed)
        labels = annotator.label(triples, salt="seed")
        rows = [(t, lab) for t, lab in zip(triples, labels) if lab is not None]
    pairs, labels = [r[0] for r in rows], [r[1] for r in rows]
    table = make_table("seed_preferences", {
        "prompt_id": [prompt_id(p[0]) for p in pairs], "prompt": [p[0] for p in pairs],
        "completion_a": [p[1] for p in pairs], "completion_b": [p[2] for p in pairs],
        **label_columns(labels, annotator.source),
        "split": heldout_split(len(rows), pc.heldout_fraction, cfg.seed, "seed")})
    return table, {"pairs": table.num_rows, **stats}
