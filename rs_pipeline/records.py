"""Typed records: what flows between steps that is not a table (checkpoints, evaluations,
promotions). Stored as JSON by the asset store; declared once, here, as ``schemas.py`` declares
every Parquet schema.

A checkpoint record's ``path`` is relative to the storage base, so a home (or bucket) copied
elsewhere still resolves.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class LoraUse:
    """How a checkpoint was trained with LoRA (adapters merged into its weights afterwards)."""

    r: int
    alpha: float
    dropout: float
    target_modules: list[str]
    modules_to_save: list[str]
    trainable_params: int
    total_params: int

    def summary(self) -> str:
        return (f"r={self.r} alpha={self.alpha:g} dropout={self.dropout:g} "
                f"targets={','.join(self.target_modules)} "
                f"trainable={self.trainable_params}/{self.total_params}")


@dataclass(frozen=True)
class PolicyCheckpoint:
    """A policy checkpoint: the base policy (``round`` None) or a round's candidate."""

    id: str
    path: str
    round: str | None = None
    parent_id: str | None = None
    sft_dataset_version: str | None = None
    sft_rows: int | None = None
    source: str = "sft"
    train_loss: float | None = None
    mlflow_version: str | None = None
    #: Set when the SFT trained LoRA adapters (merged into this checkpoint's weights).
    lora: LoraUse | None = None
    #: How it was trained: 'sft' (on sft_dataset), 'dpo' (on dpo_pairs), 'sft+dpo' (both).
    method: str = "sft"
    #: The dpo_pairs table it trained on (methods with DPO) and its rows.
    dpo_pairs_version: str | None = None
    dpo_pairs: int | None = None
    #: Set when the configured method could not run as asked (e.g. no DPO pairs): what ran.
    note: str | None = None


@dataclass(frozen=True)
class PreferenceCheckpoint:
    """A preference (reward) model: the seed one (``round`` None) or a round's refresh."""

    id: str
    path: str
    round: str | None = None
    parent_id: str | None = None
    policy_init_id: str | None = None
    labels_version: str | None = None
    train_pairs: int = 0
    replay_pairs: int = 0
    train_loss: float | None = None
    pair_acc: float | None = None
    pair_acc_verifier: float | None = None
    mlflow_version: str | None = None
    #: Set when a round kept its previous model: why the refresh was skipped.
    skipped_reason: str | None = None
    #: Set when training used LoRA adapters (merged into this checkpoint's weights).
    lora: LoraUse | None = None


@dataclass(frozen=True)
class ChampionChoice:
    """The policy a round samples from and fine-tunes, and where that choice came from."""

    checkpoint: PolicyCheckpoint
    source: Literal["promotion", "base_policy"]
    source_round: str | None = None


@dataclass(frozen=True)
class PolicyMetrics:
    """A policy on a prompt set. Verifier metrics are None for tasks without a verifier."""

    n_prompts: int
    distinct_share: float
    mean_length: float
    greedy_acc: float | None = None
    sample_acc: float | None = None
    pass_at_n: float | None = None
    mean_reward: float | None = None
    greedy_mean_reward: float | None = None


@dataclass(frozen=True)
class PolicyEvaluation:
    eval: PolicyMetrics
    gate: PolicyMetrics


@dataclass(frozen=True)
class PairAccCheck:
    """A bar the round's preference model's pair accuracy must clear: ``floor``
    (``gate.min_pair_acc`` on its own held-out pairs) or ``pairs_set`` (``gate.pairs_path``,
    against the previous preference model on the same pairs). ``value`` None: nothing to
    measure, the check was not applied (``passed`` stays True, ``note`` says why)."""

    check: str
    value: float | None
    bar: float | None
    passed: bool
    reference: float | None = None
    note: str = ""


#: How the round table names a judge (old records carry no judge: named from their metric).
_JUDGE_LABELS = {"reward_model": "rm", "seed_preference": "seed_rm", "round_preference": "round_rm",
                 "greedy_acc": "verifier", "greedy_mean_reward": "round_rm"}


def _short(v: float | None) -> str:
    if v is None:
        return "-"
    s = f"{v:.3f}"
    return s[1:] if s.startswith("0.") else "-" + s[2:] if s.startswith("-0.") else s


@dataclass(frozen=True)
class GateDecision:
    """The gate's decision and what it compared. ``metric``/``candidate``/``champion``: the
    judge's values (``win_rate``: candidate's share of wins over the champion, and 1 minus it).
    Records written before the judge fields existed load with them None."""

    promoted: bool
    metric: str
    candidate: float | None
    champion: float | None
    regressed: bool
    reward_hacking: bool
    reason: str
    #: verifier | reward_model | hook | annotator | seed_preference.
    judge: str | None = None
    #: Which one: the hook's import path, the reward model's or annotator's id.
    judge_id: str | None = None
    #: How ``auto`` chose (e.g. that it fell back to the seed preference model).
    judge_note: str | None = None
    pair_acc_floor: PairAccCheck | None = None
    pairs_set: PairAccCheck | None = None

    def summary(self) -> str:
        """One cell of the round table: ``hook .610/.580``, plus any pair check that failed,
        e.g. ``pairs .550<.600``."""
        label = self.judge or _JUDGE_LABELS.get(self.metric, self.metric)
        parts = [f"{_JUDGE_LABELS.get(label, label)} {_short(self.candidate)}/"
                 f"{_short(self.champion)}"]
        for name, check in (("pairs", self.pair_acc_floor), ("pairset", self.pairs_set)):
            if check is not None and not check.passed:
                parts.append(f"{name} {_short(check.value)}<{_short(check.bar)}")
        return " ".join(parts)


@dataclass(frozen=True)
class RoundEvaluation:
    """A round's candidate and the champion it was measured against, and the gate's decision."""

    round: str
    candidate_id: str
    champion_id: str
    reward_model_id: str
    candidate: PolicyEvaluation
    champion: PolicyEvaluation
    decision: GateDecision


@dataclass(frozen=True)
class Promotion:
    round: str
    checkpoint: PolicyCheckpoint
    reason: str
    previous_champion_id: str


#: The record type each JSON asset holds.
@dataclass(frozen=True)
class MonitorValue:
    """One monitor of a round: its value (None: not measured), its threshold and whether it
    passed; ``blocking``: a failure refuses promotion."""

    name: str
    value: float | None
    bound: Literal["min", "max"]
    threshold: float
    passed: bool
    blocking: bool
    reason: str


@dataclass(frozen=True)
class MonitorReport:
    """A round's collapse and reward-hacking monitors (``rs_pipeline.monitors``)."""

    round: str
    monitors: list[MonitorValue]
    #: How many completions the KL estimate sampled and scored (0: not measured).
    kl_samples: int = 0

    def failed_blocking(self) -> list[MonitorValue]:
        return [m for m in self.monitors if m.blocking and not m.passed]


RECORD_TYPES: dict[str, type] = {
    "base_policy": PolicyCheckpoint,
    "seed_preference_model": PreferenceCheckpoint,
    "sampling_policy": ChampionChoice,
    "preference_model": PreferenceCheckpoint,
    "policy_checkpoint": PolicyCheckpoint,
    "round_eval": RoundEvaluation,
    "promotion": Promotion,
    "round_monitors": MonitorReport,
}


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_dict(cls: type, data: dict[str, Any]):
    """Rebuild a (nested) record from its ``to_dict`` form; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(data) - names
    if extra:
        raise ValueError(f"{cls.__name__}: unexpected field(s) {sorted(extra)}")
    return cls(**{k: _value(hints[k], v) for k, v in data.items()})


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value)
    if typing.get_origin(hint) is list and typing.get_args(hint):
        return [_value(typing.get_args(hint)[0], v) for v in value]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return _value(inner[0], value)
    return value
