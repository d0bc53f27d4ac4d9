"""A home's round history, read once from the stored records: one row per round.

The CLI table, the rounds notebook, the UI pictures and the nightly rule all read rounds through
``read_round`` / ``read_history``; nothing else interprets the records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from rs_pipeline.ids import round_number
from rs_pipeline.records import PreferenceCheckpoint, RoundEvaluation
from rs_pipeline.storage import AssetStore

State = Literal["promoted", "refused", "incomplete"]


@dataclass(frozen=True)
class RoundRow:
    """What a round left: its candidate, kept-set size, preference model, evaluation, outcome.

    ``state``: ``promoted`` (a promotion is on record), ``refused`` (the gate said no) or
    ``incomplete`` (the round stopped before its outcome; the run history says why).
    """

    round: str
    state: State
    policy_id: str | None = None
    parent_policy_id: str | None = None
    kept: int | None = None
    pair_acc: float | None = None
    pair_acc_verifier: float | None = None
    greedy_acc: float | None = None
    sample_acc: float | None = None
    pass_at_n: float | None = None
    mean_reward: float | None = None
    champion_greedy_acc: float | None = None
    gate_metric: str | None = None
    gate: float | None = None
    champion_gate: float | None = None
    reason: str | None = None
    #: Who judged the gate (verifier, hook, reward_model, annotator, seed_preference; old
    #: records: from their metric) and the table's cell, e.g. ``hook .610/.580 pairs .550<.600``.
    gate_judge: str | None = None
    gate_summary: str | None = None

    @property
    def evaluated(self) -> bool:
        return self.reason is not None


def round_row(store: AssetStore, key: str, evaluation: RoundEvaluation | None = None) -> RoundRow:
    """Round ``key`` as stored; ``evaluation``: a round evaluation not stored yet (its gate
    decision then stands for the outcome)."""
    fields: dict = {}
    if store.exists("policy_checkpoint", key, "json"):
        ckpt = store.read_record("policy_checkpoint", key)
        fields.update(policy_id=ckpt.id, parent_policy_id=ckpt.parent_id)
    if store.exists("sft_dataset", key):
        fields["kept"] = store.num_rows("sft_dataset", key)
    if store.exists("preference_model", key, "json"):
        pm: PreferenceCheckpoint = store.read_record("preference_model", key)
        fields.update(pair_acc=pm.pair_acc, pair_acc_verifier=pm.pair_acc_verifier)
    stored = evaluation is None and store.exists("round_eval", key, "json")
    ev = store.read_record("round_eval", key) if stored else evaluation
    state: State = "incomplete"
    if ev is not None:
        cand, champ, d = ev.candidate, ev.champion, ev.decision
        fields.update(policy_id=ev.candidate_id, parent_policy_id=ev.champion_id,
                      greedy_acc=cand.eval.greedy_acc, sample_acc=cand.eval.sample_acc,
                      pass_at_n=cand.eval.pass_at_n, mean_reward=cand.eval.mean_reward,
                      champion_greedy_acc=champ.eval.greedy_acc, gate_metric=d.metric,
                      gate=d.candidate, champion_gate=d.champion, reason=d.reason,
                      gate_judge=d.judge or d.summary().split(" ", 1)[0],
                      gate_summary=d.summary())
        state = "refused" if not d.promoted else "incomplete"
    if store.exists("promotion", key, "json") or (evaluation is not None
                                                   and evaluation.decision.promoted):
        state = "promoted"
    return RoundRow(round=key, state=state, **fields)


def stored_rounds(store: AssetStore) -> list[str]:
    """Every round key that left a table or record, in round order."""
    keys = set(store.partitions("round_prompts", "parquet")) | set(
        store.partitions("round_eval", "json"))
    return sorted(keys, key=round_number)


def generated_tokens(store: AssetStore, key: str) -> int:
    """Tokens round ``key`` sampled: its generations' ``num_tokens`` plus the end-of-sequence
    token of each finished row, as the sampler counts them (0 before its generations exist)."""
    if not store.exists("generations", key):
        return 0
    table = store.read_table("generations", key)
    return sum(table.column("num_tokens").to_pylist()) + sum(table.column("finished").to_pylist())


def read_history(store: AssetStore, current: RoundEvaluation | None = None) -> list[RoundRow]:
    """Every round of the home in order (``current``: an evaluation not stored yet)."""
    keys = stored_rounds(store)
    if current is not None and current.round not in keys:
        keys = sorted([*keys, current.round], key=round_number)
    return [round_row(store, k, current if current is not None and k == current.round else None)
            for k in keys]


def champion_curve(store: AssetStore) -> list[dict]:
    """The champion's held-out greedy accuracy against the tokens the rounds have generated so
    far: a start point (the first champion, 0 tokens), then one point per evaluated round."""
    points, spent = [], 0
    for row in read_history(store):
        spent += generated_tokens(store, row.round)
        if not row.evaluated:
            continue
        if not points:
            points.append({"round": "start", "round_tokens": 0, "tokens": 0, "state": "",
                           "champion_greedy_acc": row.champion_greedy_acc})
        champion = row.greedy_acc if row.state == "promoted" else row.champion_greedy_acc
        points.append({"round": row.round, "round_tokens": generated_tokens(store, row.round),
                       "tokens": spent, "state": row.state, "champion_greedy_acc": champion})
    return points


def history_frame(rows: list[RoundRow], evaluated_only: bool = True) -> pd.DataFrame:
    """The rows as a DataFrame (by default only rounds that reached evaluation)."""
    rows = [r for r in rows if r.evaluated or not evaluated_only]
    cols = [f.name for f in dataclasses.fields(RoundRow)]
    frame = pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=cols)
    frame["promoted"] = frame["state"] == "promoted"
    return frame
