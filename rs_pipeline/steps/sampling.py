"""Round steps that sample: the round's prompts and N generations per prompt."""

from __future__ import annotations

import pyarrow as pa

from rs_pipeline.chat import prompt_kwargs, render_text
from rs_pipeline.context import RunContext
from rs_pipeline.ids import config_hash, sample_seed, seeded_rng
from rs_pipeline.records import PolicyCheckpoint
from rs_pipeline.resume import Resume, lazy
from rs_pipeline.schemas import make_table


def round_prompts(ctx: RunContext, pool: pa.Table, round_key: str) -> pa.Table:
    """``task.round_size`` prompts from the pool without replacement, seeded by (seed, round)."""
    n = pool.num_rows
    size = min(ctx.settings.task.round_size, n)
    idx = sorted(seeded_rng(ctx.settings.seed, round_key).sample(range(n), size))
    sub = pool.take(idx)
    return make_table("round_prompts", {"round": [round_key] * len(idx),
                                        "prompt_id": sub.column("prompt_id").to_pylist(),
                                        "prompt": sub.column("prompt").to_pylist()})


def generations(ctx: RunContext, prompts: pa.Table, policy: PolicyCheckpoint, round_key: str,
                resume: Resume | None = None) -> tuple[pa.Table, dict]:
    """N samples per prompt from ``policy`` with per-sample seeds, by the engine
    ``generation.engine`` names (the seeds it really used are recorded); every row carries its
    lineage (round, prompt, policy, sampling parameters, seed). With ``resume``, rows are
    committed in shards of prompts and a re-run samples only the shards not yet on disk."""
    params, seed = ctx.sampling, ctx.settings.seed
    engine = lazy(lambda: ctx.policy_engine(policy))  # started only if a shard needs it
    pids, texts = prompts.column("prompt_id").to_pylist(), prompts.column("prompt").to_pylist()
    timing = {"tokens": 0, "seconds": 0.0}
    chat = ctx.settings.policy.chat_template

    def compute(start: int, stop: int) -> pa.Table:
        chunk = texts[start:stop]
        if chunk:
            e = engine()
            rendered = render_text(e.tokenizer, chunk, chat)
            kw = prompt_kwargs(e, e.tokenizer, chunk, chat)
            out = e.sample(kw["prompt_ids"], params,
                           lambda p, s: sample_seed(seed, round_key, pids[start + p], s),
                           kw["stop_ids"])
        else:
            out, rendered = _NO_ROWS, []
        timing["tokens"] += sum(out["num_tokens"]) + sum(out["finished"])
        timing["seconds"] += out["seconds"]
        rows = len(out["completion"])
        row_pid = [pids[start + i] for i in out["prompt_index"]]
        return make_table("generations", {
            "generation_id": [f"g-{config_hash([policy.id, p, s])[:12]}"
                              for p, s in zip(row_pid, out["seed"])],
            "round": [round_key] * rows, "prompt_id": row_pid,
            "prompt": [chunk[i] for i in out["prompt_index"]],
            "rendered_prompt": [rendered[i] for i in out["prompt_index"]],
            "sample_index": out["sample_index"], "completion": out["completion"],
            "num_tokens": out["num_tokens"], "finished": out["finished"], "seed": out["seed"],
            "policy_id": [policy.id] * rows, "temperature": [params.temperature] * rows,
            "top_k": [params.top_k] * rows, "top_p": [params.top_p] * rows,
            "max_new_tokens": [params.max_new_tokens] * rows,
        })

    try:
        table = resume.sharded(len(texts), compute) if resume else compute(0, len(texts))
    finally:
        if engine.started:
            engine().close()  # a vLLM worker exits here, before anything else needs the memory
    seconds = timing["seconds"]
    return table, {"gen/tokens_per_s": timing["tokens"] / seconds if seconds else None,
                   "gen/seconds": seconds, "gen/rows": table.num_rows}


_NO_ROWS = {k: [] for k in ("prompt_index", "sample_index", "completion", "num_tokens",
                            "finished", "seed")} | {"seconds": 0.0}
