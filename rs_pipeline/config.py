"""The pipeline's settings: one typed tree of dataclasses, loaded from one YAML file.

Every field has a one-line doc (the ``doc`` metadata) that the README's settings table repeats.
Budgets are in steps, epochs and samples, never seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rs_pipeline.errors import InputError


def _f(default: Any, doc: str):
    return field(default=default, metadata={"doc": doc})


@dataclass
class TaskConfig:
    name: str = _f("rev8", "Task: 'rev8' (default demo), 'addition', or 'prompts_file'.")
    prompts_path: str | None = _f(None, "Parquet/JSONL with a 'prompt' column (task 'prompts_file').")
    eval_size: int = _f(256, "Prompts held out for the reported evaluation (never trained on).")
    gate_size: int = _f(512, "Prompts held out for the promotion gate (never trained on).")
    round_size: int = _f(2048, "Prompts sampled per round from the training pool.")


@dataclass
class PolicyConfig:
    base_path: str | None = _f(None, "Local Hugging Face causal-LM folder; empty: build the demo model.")
    n_layer: int = _f(4, "Demo model: transformer layers.")
    n_embd: int = _f(128, "Demo model: width.")
    n_head: int = _f(4, "Demo model: attention heads.")
    n_positions: int = _f(64, "Demo model: context length.")
    pretrain_steps: int = _f(300, "Demo model: pretraining steps on the task's bugged data.")
    pretrain_batch_size: int = _f(128, "Demo model: pretraining batch size.")
    pretrain_lr: float = _f(2e-3, "Demo model: peak learning rate (cosine to a tenth).")
    bug_rate: float = _f(0.6, "Demo model: share of pretraining answers carrying the task's bug.")


@dataclass
class GenerationConfig:
    n: int = _f(8, "Samples per prompt (the N of best-of-N).")
    temperature: float = _f(1.0, "Sampling temperature.")
    top_k: int = _f(0, "Keep the k most likely tokens (0: off).")
    top_p: float = _f(1.0, "Nucleus sampling mass (1.0: off).")
    max_new_tokens: int = _f(0, "Longest completion in tokens (0: from the task).")
    batch_prompts: int = _f(256, "Prompts per sampling batch (each expanded N times).")


@dataclass
class PreferenceConfig:
    base_path: str | None = _f(None, "Local sequence-classifier folder to start from (else the policy).")
    seed_pairs: int = _f(6000, "Synthetic labelled pairs for the first preference model.")
    seed_labels_path: str | None = _f(None, "Parquet of human seed judgements (replaces seed_pairs).")
    seed_epochs: float = _f(2.0, "Epochs over the seed pairs.")
    pairs_per_round: int = _f(2000, "On-policy pairs of distinct completions labelled per round.")
    pair_strategy: str = _f("top_vs_other", "'top_vs_other' (previous model's favourite vs another) "
                            "or 'random'.")
    replay_pairs: int = _f(2000, "Pairs replayed from earlier rounds at each refresh.")
    epochs: float = _f(1.0, "Epochs over a round's pairs plus replay.")
    learning_rate: float = _f(2e-4, "Refresh learning rate (5e-4 and above is noisy).")
    seed_learning_rate: float = _f(5e-4, "Learning rate of the first preference model.")
    batch_size: int = _f(64, "Pairs per training batch.")
    heldout_fraction: float = _f(0.1, "Share of labelled pairs held out for pair accuracy.")


@dataclass
class AnnotatorConfig:
    kind: str = _f("simulated", "'simulated' (verifier + noise) or 'file' (human judgements).")
    label_noise: float = _f(0.1, "Simulated: probability a decided label is flipped.")
    path: str | None = _f(None, "File: Parquet with prompt, completion_a, completion_b, hp.")


@dataclass
class SelectionConfig:
    selector: str = _f("preference", "'preference', 'verifier', or 'mix'.")
    mix_weight: float = _f(0.5, "Mix: weight of the verifier score (1 - weight on the reward).")
    threshold: float | None = _f(None, "Keep the best only if its selection score is at least this.")
    dpo_min_margin: float = _f(0.5, "Minimum best-minus-worst score for a DPO pair.")


@dataclass
class SFTConfig:
    epochs: float = _f(1.0, "Epochs over the kept set (budget in epochs, never seconds).")
    learning_rate: float = _f(5e-4, "Peak learning rate (linear decay).")
    batch_size: int = _f(64, "Rows per batch.")


@dataclass
class GateConfig:
    tolerance: float = _f(0.01, "Refuse a candidate whose gate accuracy is below champion - this.")
    hacking_reward_margin: float = _f(0.05, "Reward rise that, with accuracy falling, flags hacking.")
    hacking_acc_margin: float = _f(0.01, "Accuracy fall that, with reward rising, flags hacking.")


@dataclass
class StorageConfig:
    base_uri: str | None = _f(None, "Where assets live (path or URI); empty: $DAGSTER_HOME/storage.")
    mlflow_tracking_uri: str | None = _f(None, "MLflow tracking URI; empty: sqlite in $DAGSTER_HOME.")
    mlflow_experiment: str = _f("rs_pipeline", "MLflow experiment name.")


@dataclass
class ScheduleConfig:
    enabled: bool = _f(False, "Start the nightly_round schedule running (else off until turned on).")
    cron: str = _f("0 2 * * *", "When the nightly round starts (cron).")
    timezone: str = _f("", "IANA time zone of the cron; empty: this machine's local time.")


@dataclass
class PipelineConfig:
    seed: int = _f(0, "Seeds every random choice: same config, same rows.")
    task: TaskConfig = field(default_factory=TaskConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_dict(self, *names: str) -> dict[str, Any]:
        return {n: dataclasses.asdict(getattr(self, n)) for n in names}


# Per-task presets the demo applies (measured in NOTES/README): gentle SFT keeps rev8 stable,
# addition needs a slightly larger step and leans on the gate.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    "rev8": {"policy": {"pretrain_steps": 300}, "sft": {"epochs": 1.0, "learning_rate": 5e-4}},
    "addition": {
        "policy": {"pretrain_steps": 400},
        "sft": {"epochs": 2.0, "learning_rate": 5e-4},
        "gate": {"tolerance": 0.02},
    },
}


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise InputError(f"setting {where or '<root>'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            raise InputError(f"setting {name}: unknown (known: {', '.join(fields)})")
        sub = fields[key].default_factory
        if dataclasses.is_dataclass(sub):
            kwargs[key] = _build(sub, value or {}, name)
        else:
            kwargs[key] = _coerce(fields[key], value, name)
    return cls(**kwargs)


def _coerce(f: dataclasses.Field, value: Any, name: str) -> Any:
    default = f.default
    if value is None or default is None:
        return value
    kind = type(default)
    if kind is bool or kind is str:
        if not isinstance(value, kind):
            raise InputError(f"setting {name}: expected {kind.__name__}, got {value!r}")
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(f"setting {name}: expected {kind.__name__}, got {value!r}") from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_dict(data: dict[str, Any]) -> PipelineConfig:
    return _build(PipelineConfig, data or {}, "")


def load_config(path: str | Path) -> PipelineConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise InputError(f"config file {path} is not valid YAML: {exc}") from None
    try:
        return config_from_dict(data)
    except InputError as exc:
        raise InputError(f"config file {path}: {exc}") from None


def demo_config(task: str = "rev8", **overrides: Any) -> PipelineConfig:
    """The demo's settings for a built-in task, with the task's preset applied."""
    if task not in TASK_PRESETS:
        raise InputError(f"unknown demo task {task!r} (known: {', '.join(TASK_PRESETS)})")
    data = merge({"task": {"name": task}}, TASK_PRESETS[task])
    return config_from_dict(merge(data, overrides))


def documented_settings(cls: type = PipelineConfig, prefix: str = ""):
    """Every leaf setting as (dotted name, default, one-line doc), in declaration order."""
    for f in dataclasses.fields(cls):
        sub = f.default_factory
        if sub is not dataclasses.MISSING and dataclasses.is_dataclass(sub):
            yield from documented_settings(sub, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f.default, f.metadata.get("doc", "")


def settings_table() -> str:
    """The README's settings table (Markdown)."""
    rows = [f"| `{n}` | `{d}` | {doc} |" for n, d, doc in documented_settings()]
    return "\n".join(["| setting | default | meaning |", "|---|---|---|", *rows])
