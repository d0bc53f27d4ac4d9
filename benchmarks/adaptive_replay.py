"""Adaptive best-of-N replayed from a plain run: what a rule set would sample and keep,
without sampling again.

Adaptive sample ``j`` of a prompt is plain best-of-N's sample ``j`` (same seed), and the waves
are scored by the same model that scores the plain rows, so any rule set whose waves fit in
``generation.n`` can be replayed exactly from the plain run's rows: the same ``WavePlan``
decides, wave by wave, on the plain rows' rewards (their ``selection_score``) and sampling
probabilities, and the kept row of a prompt is its best drawn row. ``benchmarks/adaptive.py
--replay`` prints the replayed token ratio and precision delta of many rule sets from one plain
run (and replays the sampled variants too, as a check against the real thing).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlainRow:
    score: float
    correct: bool
    completion: str
    tokens: int


def replay_inputs(ctx, prompts, base, plain, scores) -> tuple[list[list[PlainRow]], list[dict]]:
    """Per prompt position (the round's prompt order): its plain rows in sample order, and
    each distinct completion's sampling log-probability (``sampling.sample_probabilities``)."""
    from rs_pipeline.resume import lazy
    from rs_pipeline.steps import sampling

    g, sc = plain.to_pydict(), scores.to_pydict()
    by_id = {gid: (s, (v or 0) > 0) for gid, s, v in zip(sc["generation_id"], sc["selection_score"],
                                                          sc["verifier_score"])}
    where = {pid: p for p, pid in enumerate(prompts.column("prompt_id").to_pylist())}
    rows: list[list[tuple[int, PlainRow]]] = [[] for _ in where]
    for gid, pid, j, c, n, done in zip(g["generation_id"], g["prompt_id"], g["sample_index"],
                                       g["completion"], g["num_tokens"], g["finished"]):
        score, correct = by_id[gid]
        rows[where[pid]].append((j, PlainRow(score, correct, c, n + int(done))))
    engine = lazy(lambda: ctx.policy_engine(base))
    try:
        found = sampling.sample_probabilities(ctx, engine, prompts, g)
    finally:
        if engine.started:
            engine().close()
    return [[r for _, r in sorted(p)] for p in rows], [found.get(p, {}) for p in range(len(rows))]


def replay(rows: list[list[PlainRow]], logprobs: list[dict], variant: dict, n: int) -> dict:
    """``tokens``, ``precision`` and ``stopped`` of rule set ``variant`` (``waves`` and the
    ``stop_*`` rules) replayed on the plain rows."""
    from rs_pipeline.waves import WavePlan, parse_waves

    sizes = parse_waves(variant["waves"], n)
    if sum(sizes) > n:
        raise ValueError(f"waves {variant['waves']!r} draw past n={n}: not in the plain rows")
    rules = {k: v for k, v in variant.items() if k.startswith("stop_")}
    plan = WavePlan(sizes, n * len(rows), **rules)
    drawn = [0] * len(rows)
    for w, size in enumerate(sizes):
        at = plan.chosen(w, len(rows))
        if not at:
            break
        rewards, seen = {}, {}
        for p in at:
            new = rows[p][drawn[p]:drawn[p] + size]
            rewards[p] = [r.score for r in new]
            seen[p] = {r.completion: logprobs[p][r.completion] for r in new}
            drawn[p] += size
        plan.add(w, rewards, seen)
    kept = [max(enumerate(r[:d]), key=lambda x: (x[1].score, -x[0]))[1]
            for r, d in zip(rows, drawn)]
    return {"tokens": sum(x.tokens for r, d in zip(rows, drawn) for x in r[:d]),
            "precision": sum(k.correct for k in kept) / len(kept),
            "stopped": len(plan.stopped)}
