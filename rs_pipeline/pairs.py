"""On-policy preference pairs: two *distinct* completions of one prompt from this round's samples.

Identical completions carry no gradient under BT (a tie), so they are never paired.

Strategy ``top_vs_other`` (the default) spends labels where selection will look: each prompt's
first pair is the completion the *previous* preference model scores highest against another
distinct one. When that favourite is wrong, the annotator says so, and the blind spot the policy
was about to exploit is corrected before selection uses it. ``random`` pairs uniformly.

Strategy ``active`` spends a label budget where the previous model is least sure of an order
that matters: among each prompt's top-k distinct completions by its conservative score, the pairs
whose reward difference the ensemble's heads disagree on most (one head: the smallest margin).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
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
    first_row = _first_rows(prompt_ids, completions)
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


def _first_rows(prompt_ids: Sequence[str], completions: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per prompt, each distinct completion's first row."""
    first_row: dict[str, dict[str, int]] = defaultdict(dict)
    for i, (pid, comp) in enumerate(zip(prompt_ids, completions)):
        first_row[pid].setdefault(comp, i)
    return first_row


def active_pairs(prompt_ids: Sequence[str], completions: Sequence[str], n_pairs: int, seed: int,
                 head_scores: Sequence[Sequence[float]], top_k: int,
                 penalty: float = 0.0) -> list[tuple[int, int]]:
    """Up to ``n_pairs`` (row_a, row_b) pairs the previous model is least sure how to order.

    ``head_scores`` holds each row's reward under every head (rows x heads). Per prompt, its
    ``top_k`` distinct completions by conservative score (mean - ``penalty`` * std over heads;
    ties to the first row) give every pair among them; a pair's uncertainty is the standard
    deviation over heads of r_a - r_b (with one head: minus |r_a - r_b|, the smallest margin is
    the least sure). Pairs are taken in passes of at most one per prompt (each prompt's most
    uncertain pair not yet taken), each pass ranked globally by uncertainty, until the budget is
    spent; ties and each pair's (a, b) order are drawn from ``seed``.
    """
    h = np.asarray(head_scores, dtype=np.float64).reshape(len(prompt_ids), -1)
    heads = h.shape[1]
    mean = h.mean(axis=1)
    cons = mean - penalty * h.std(axis=1, ddof=1) if heads > 1 and penalty else mean
    rng = random.Random(seed)
    first_row = _first_rows(prompt_ids, completions)
    order = sorted(first_row)
    rng.shuffle(order)  # tie-break between prompts of equal uncertainty
    queues: dict[str, list[tuple[float, int, int]]] = {}
    for pid in order:
        top = sorted(first_row[pid].values(), key=lambda r: (-cons[r], r))[:top_k]
        combos = []
        for i, a in enumerate(top):
            for b in top[i + 1 :]:
                diff = h[a] - h[b]
                unsure = float(diff.std(ddof=1)) if heads > 1 else -abs(float(diff[0]))
                combos.append((unsure, a, b))
        if combos:
            queues[pid] = sorted(combos, key=lambda c: -c[0])  # stable: top-rank order on ties
    out: list[tuple[int, int]] = []
    while len(out) < n_pairs and queues:
        this_pass = sorted(((q.pop(0), pid) for pid, q in queues.items()), key=lambda c: -c[0][0])
        for (_, a, b), _ in this_pass[: n_pairs - len(out)]:
            out.append((a, b) if rng.random() < 0.5 else (b, a))
        queues = {pid: q for pid, q in queues.items() if q}
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
