"""Round steps that sample: the round's prompts and N generations per prompt (plain best-of-N,
or adaptive best-of-N in waves: ``rs_pipeline.waves``)."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from rs_pipeline.chat import prompt_kwargs, render_text
from rs_pipeline.context import RunContext
from rs_pipeline.ids import config_hash, sample_seed, seeded_rng
from rs_pipeline.preference import mean_and_spread, score_heads
from rs_pipeline.records import PolicyCheckpoint, PreferenceCheckpoint
from rs_pipeline.resume import Resume, lazy
from rs_pipeline.schemas import make_table, schema_for
from rs_pipeline.selection import conservative
from rs_pipeline.waves import WavePlan, parse_waves


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
                resume: Resume | None = None,
                scorer: PreferenceCheckpoint | None = None,
                part: tuple[int, int] | None = None) -> tuple[pa.Table, dict]:
    """N samples per prompt from ``policy`` with per-sample seeds, by the engine
    ``generation.engine`` names (the seeds it really used are recorded); every row carries its
    lineage (round, prompt, policy, sampling parameters, seed). With ``resume``, rows are
    committed in shards of prompts and a re-run samples only the shards not yet on disk; with
    ``part=(i, k)`` too, only every k-th shard from the i-th (one of k parallel steps: the
    rows of that part). With ``generation.waves``, adaptive best-of-N (``adaptive_generations``)
    scored by ``scorer``, the preference model the round starts with; its waves decide over
    all prompts at once, so a part does nothing and the merge samples them."""
    if ctx.settings.generation.waves:
        if scorer is None:
            raise ValueError("generation.waves needs the round's incoming preference model")
        if part is not None:
            return schema_for("generations").empty_table(), {"gen/seconds": 0.0, "gen/rows": 0}
        return adaptive_generations(ctx, prompts, policy, round_key, scorer, resume)
    if part is not None and resume is None:
        raise ValueError("a part of the generations is committed as shards: it needs resume")
    sample = _sampler(ctx, prompts, policy, round_key)
    try:
        table = (resume.sharded(len(sample.texts), sample, part=part) if resume
                 else sample(0, len(sample.texts)))
    finally:
        sample.close()
    seconds = sample.seconds
    return table, {"gen/tokens_per_s": sample.tokens / seconds if seconds else None,
                   "gen/seconds": seconds, "gen/rows": table.num_rows,
                   "gen/sampled_tokens": sample.tokens}


class _sampler:  # noqa: N801 - used like a function: ``sample(start, stop)``
    """``sample(start, stop)``: the generations rows of prompts ``start:stop``; with
    ``positions`` (prompt positions) and ``first`` (per position, the sample index its first
    new sample takes) the prompts ``positions[start:stop]``, sample ``s`` of the call being
    sample index ``first[p] + s`` with that index's seed. The engine starts on first use."""

    def __init__(self, ctx: RunContext, prompts: pa.Table, policy: PolicyCheckpoint,
                 round_key: str):
        self.ctx, self.policy, self.round_key = ctx, policy, round_key
        self.params = ctx.sampling
        self.engine = lazy(lambda: ctx.policy_engine(policy))  # started only if a shard needs it
        self.pids = prompts.column("prompt_id").to_pylist()
        self.texts = prompts.column("prompt").to_pylist()
        self.positions: list[int] | None = None
        self.first: dict[int, int] = {}
        self.tokens, self.seconds = 0, 0.0

    def __call__(self, start: int, stop: int) -> pa.Table:
        seed, params, policy = self.ctx.settings.seed, self.params, self.policy
        at = (list(range(start, stop)) if self.positions is None
              else self.positions[start:stop])
        chunk, pids = [self.texts[p] for p in at], [self.pids[p] for p in at]
        first = [self.first.get(p, 0) for p in at]
        if chunk:
            e, chat = self.engine(), self.ctx.settings.policy.chat_template
            rendered = render_text(e.tokenizer, chunk, chat)
            kw = prompt_kwargs(e, e.tokenizer, chunk, chat)
            out = e.sample(kw["prompt_ids"], params,
                           lambda p, s: sample_seed(seed, self.round_key, pids[p], first[p] + s),
                           kw["stop_ids"])
        else:
            out, rendered = _NO_ROWS, []
        self.tokens += sum(out["num_tokens"]) + sum(out["finished"])
        self.seconds += out["seconds"]
        rows = len(out["completion"])
        row_pid = [pids[i] for i in out["prompt_index"]]
        return make_table("generations", {
            "generation_id": [f"g-{config_hash([policy.id, p, s])[:12]}"
                              for p, s in zip(row_pid, out["seed"])],
            "round": [self.round_key] * rows, "prompt_id": row_pid,
            "prompt": [chunk[i] for i in out["prompt_index"]],
            "rendered_prompt": [rendered[i] for i in out["prompt_index"]],
            "sample_index": [first[i] + s for i, s in zip(out["prompt_index"],
                                                          out["sample_index"])],
            "completion": out["completion"],
            "num_tokens": out["num_tokens"], "finished": out["finished"], "seed": out["seed"],
            "policy_id": [policy.id] * rows, "temperature": [params.temperature] * rows,
            "top_k": [params.top_k] * rows, "top_p": [params.top_p] * rows,
            "max_new_tokens": [params.max_new_tokens] * rows,
        })

    def close(self) -> None:
        if self.engine.started:
            self.engine().close()  # a vLLM worker exits here, before anything else needs memory


def adaptive_generations(ctx: RunContext, prompts: pa.Table, policy: PolicyCheckpoint,
                         round_key: str, scorer: PreferenceCheckpoint,
                         resume: Resume | None = None) -> tuple[pa.Table, dict]:
    """Adaptive best-of-N (``rs_pipeline.waves``): waves of ``generation.waves`` samples, each
    scored by ``scorer`` (the preference model the round starts with: the one this round
    refreshes is trained on these very samples), prompts stopping once their best is good
    enough. Rows, ids and seeds are plain best-of-N's for the same sample indices, ordered by
    prompt then sample index. With ``resume`` each wave commits its own shards; a re-run reads
    them back and rescores them, so it takes the same decisions and writes the same rows."""
    g, penalty = ctx.settings.generation, ctx.settings.selection.uncertainty_penalty
    sizes = parse_waves(g.waves, g.n)
    sample = _sampler(ctx, prompts, policy, round_key)
    count = len(sample.texts)
    where = {pid: p for p, pid in enumerate(sample.pids)}
    plan = WavePlan(sizes, g.n * count, g.stop_score, g.stop_gain, g.stop_margin,
                    g.stop_unanimous, g.stop_loser_quantile, g.stop_coverage)
    model = lazy(lambda: ctx.load_preference(scorer))
    tables, metrics = [], {}
    try:
        for w, size in enumerate(sizes):
            at = plan.chosen(w, count)
            if not at:
                break
            sample.positions, sample.first = at, {p: plan.drawn(p) for p in at}
            sample.params = dataclasses.replace(ctx.sampling, n=size)
            table = (resume.sharded(len(at), sample, tag=f"wave{w + 1}-") if resume
                     else sample(0, len(at)))
            tables.append(table)
            d = table.to_pydict()
            mean, spread = mean_and_spread(score_heads(*model(), d["prompt"], d["completion"]))
            rewards: dict[int, list[float]] = {}
            for pid, m, s in zip(d["prompt_id"], mean, spread):
                rewards.setdefault(where[pid], []).append(conservative(m, s, penalty))
            seen = (sample_probabilities(ctx, sample.engine, prompts, d, plan.seen)
                    if g.stop_coverage is not None else None)
            stopped = plan.add(w, rewards, seen)
            metrics |= {f"gen/wave{w + 1}_prompts": len(at), f"gen/wave{w + 1}_samples":
                        table.num_rows, f"gen/wave{w + 1}_tokens": generated_tokens(table),
                        f"gen/wave{w + 1}_stopped": stopped}
    finally:
        sample.close()
    table = pa.concat_tables(tables)
    pid, index = table.column("prompt_id").to_pylist(), table.column("sample_index").to_pylist()
    table = table.take(sorted(range(table.num_rows), key=lambda i: (where[pid[i]], index[i])))
    seconds = sample.seconds
    return table, {**metrics, "gen/tokens_per_s": sample.tokens / seconds if seconds else None,
                   "gen/seconds": seconds, "gen/rows": table.num_rows,
                   "gen/tokens": generated_tokens(table), "gen/budget_rows": plan.budget,
                   "gen/stopped_prompts": len(plan.stopped)}


def sample_probabilities(ctx: RunContext, engine, prompts: pa.Table, wave: dict,
                         seen: dict[int, dict] | None = None) -> dict[int, dict[str, float]]:
    """Per prompt position of ``prompts``, the sampling log-probability of each completion of
    ``wave`` (generations columns) not in ``seen`` (per position: completions already known),
    by the policy teacher-forced (``engine()``'s ``completion_logprobs``; the engine is asked
    for only when there is something to score): distinct rows only, in sorted order, so a
    re-run that reads the wave back computes the very same numbers."""
    texts = prompts.column("prompt").to_pylist()
    where = {pid: p for p, pid in enumerate(prompts.column("prompt_id").to_pylist())}
    seen = seen or {}
    new = sorted({(where[pid], c, done) for pid, c, done
                  in zip(wave["prompt_id"], wave["completion"], wave["finished"])
                  if c not in seen.get(where[pid], {})})
    if not new:
        return {}
    e, chat = engine(), ctx.settings.policy.chat_template
    kw = prompt_kwargs(e, e.tokenizer, [texts[p] for p, _, _ in new], chat)
    rows = [(ids, e.tokenizer(c, add_special_tokens=False)["input_ids"], done)
            for ids, (_, c, done) in zip(kw["prompt_ids"], new)]
    logprobs = e.completion_logprobs(rows, ctx.sampling, kw["stop_ids"])
    out: dict[int, dict[str, float]] = {}
    for (p, c, _), lp in zip(new, logprobs):
        out.setdefault(p, {})[c] = lp
    return out


def generated_tokens(table: pa.Table) -> int:
    """Tokens generated for ``table``'s rows (each completion's tokens plus its stop token)."""
    return (sum(table.column("num_tokens").to_pylist())
            + sum(table.column("finished").to_pylist()))


_NO_ROWS = {k: [] for k in ("prompt_index", "sample_index", "completion", "num_tokens",
                            "finished", "seed")} | {"seconds": 0.0}
