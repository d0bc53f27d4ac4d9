"""On-policy preference pairs: two *distinct* completions of one prompt from this round's samples.

Identical completions carry no gradient under BT (a tie), so they are never paired.

Strategy ``top_vs_other`` (the default) spends labels where selection will look: each prompt's
first pair is the completion the *previous* preference model scores highest against another
distinct one. When that favourite is wrong, the annotator says so, and the blind spot the policy
was about to exploit is corrected before selection uses it. ``random`` pairs uniformly.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

import pyarrow as pa

from rs_pipeline.ids import seeded_rng

LabelledPair = tuple[str, str, str, float]  # (prompt, completion_a, completion_b, hp)


def distinct_pairs(prompt_ids: Sequence[str], completions: Sequence[str], n_pairs: int,
                   seed: int, scores: Sequence[float] | None = None) -> list[tuple[int, int]]:
    """Up to ``n_pairs`` (row_a, row_b) index pairs of distinct completions of the same prompt.

    Rows are the input positions; each completion is represented by its first row. Prompts are
    visited in a seeded random order, one new pair per prompt per pass, so pairs spread over as
    many prompts as possible before any prompt gives a second pair. With ``scores``, a prompt's
    first pair is its top-scored completion against a random other one.
    """
    first_row: dict[str, dict[str, int]] = defaultdict(dict)
    for i, (pid, comp) in enumerate(zip(prompt_ids, completions)):
        first_row[pid].setdefault(comp, i)
    rng = random.Random(seed)
    candidates = {}
    for pid in sorted(first_row):
        rows = sorted(first_row[pid].values())
        combos = [(a, b) for k, a in enumerate(rows) for b in rows[k + 1 :]]
        rng.shuffle(combos)
        if scores is not None and combos:
            top = max(rows, key=lambda r: (scores[r], -r))
            combos.sort(key=lambda ab: top in ab)  # stable: top's pairs last, popped first
        if combos:
            candidates[pid] = combos
    order = sorted(candidates)
    rng.shuffle(order)
    out: list[tuple[int, int]] = []
    while len(out) < n_pairs and order:
        nxt = []
        for pid in order:
            if len(out) == n_pairs:
                break
            a, b = candidates[pid].pop()
            out.append((a, b) if rng.random() < 0.5 else (b, a))
            if candidates[pid]:
                nxt.append(pid)
        order = nxt
    return out


def heldout_split(count: int, fraction: float, seed: int, salt: str) -> list[str]:
    """The one held-out rule: each labelled pair is ``heldout`` with probability ``fraction``,
    from a stream seeded by (seed, salt) (salt: the round key, or "seed")."""
    rng = seeded_rng(seed, salt, "heldout")
    return ["heldout" if rng.random() < fraction else "train" for _ in range(count)]


def labelled_pairs(table: pa.Table) -> list[LabelledPair]:
    d = table.select(["prompt", "completion_a", "completion_b", "hp"]).to_pydict()
    return list(zip(d["prompt"], d["completion_a"], d["completion_b"], d["hp"]))


def split_pairs(table: pa.Table) -> tuple[list[LabelledPair], list[LabelledPair]]:
    """A labelled table's (train, heldout) pairs by its ``split`` column, in row order."""
    rows, split = labelled_pairs(table), table.column("split").to_pylist()
    return ([r for r, s in zip(rows, split) if s == "train"],
            [r for r, s in zip(rows, split) if s == "heldout"])
