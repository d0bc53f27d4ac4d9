"""The pipeline's settings: one typed tree of dataclasses, loaded from one YAML file.

Every field has a one-line doc (the ``doc`` metadata) that the README's settings table repeats,
and optionally a range (``ge``/``gt``/``le``/``lt``). Choices are ``Literal`` types. Loading
checks types, ranges, choices and unknown keys and reports *every* problem at once.
Budgets are in steps, epochs and samples, never seconds.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rs_pipeline.errors import InputError

Selector = Literal["preference", "verifier", "mix"]
PairStrategy = Literal["top_vs_other", "random", "active"]
RewardKind = Literal["head", "likelihood"]
AnnotatorKind = Literal["simulated", "file", "reward_model", "judge", "mixed", "human"]
ChatTemplateMode = Literal["auto", "off"]
Engine = Literal["transformers", "vllm"]
GateJudge = Literal["auto", "verifier", "reward_model", "hook", "annotator"]
SelectionRule = Literal["argmax", "top_k", "random"]
Normalize = Literal["none", "prompt"]
TrainingMethod = Literal["sft", "dpo", "sft+dpo"]
DpoPairing = Literal["score", "verifier"]
Executor = Literal["in_process", "multiprocess", "dask"]
TrainingLauncher = Literal["in_process", "accelerate"]


def _f(default: Any, doc: str, **bounds: float):
    """A setting: its default, a one-line doc, and optional bounds ``ge``/``gt``/``le``/``lt``."""
    return field(default=default, metadata={"doc": doc, **bounds})


@dataclass
class LoraConfig:
    """Low-rank adapters (peft) instead of full fine-tuning; merged into the weights after
    training, so every checkpoint stays a plain Hugging Face folder."""

    enabled: bool = _f(False, "Train LoRA adapters (base weights frozen), then merge them.")
    r: int = _f(8, "LoRA rank.", ge=1)
    alpha: float = _f(16.0, "LoRA scaling numerator (the update is scaled by alpha / r).", gt=0)
    dropout: float = _f(0.0, "Dropout on the adapters' input.", ge=0, lt=1)
    target_modules: str = _f("auto", "'auto' (peft's per-architecture default), 'all-linear', or "
                             "comma-separated module names.")


@dataclass
class TaskConfig:
    """Where prompts come from and how many each split and round gets."""

    name: str = _f("rev8", "Task: 'rev8' (default demo), 'addition', 'prompts_file', an import "
                   "path 'package.module:TaskClass', or a name registered under the entry-point "
                   "group 'rs_pipeline.tasks'.")
    prompts_path: str | None = _f(None, "Parquet/JSONL with a 'prompt' column (task 'prompts_file').")
    eval_size: int = _f(256, "Prompts held out for the reported evaluation (never trained on).", ge=1)
    gate_size: int = _f(512, "Prompts held out for the promotion gate (never trained on).", ge=1)
    round_size: int = _f(2048, "Prompts sampled per round from the training pool.", ge=1)


@dataclass
class PolicyConfig:
    """The round-0 policy: your checkpoint folder, or the demo model built here."""

    base_path: str | None = _f(None, "Local Hugging Face causal-LM folder; empty: build the demo model.")
    chat_template: ChatTemplateMode = _f(
        "auto", "'auto': prompts go through the policy tokenizer's chat template when it has one "
        "(answers end at its end-of-turn token); 'off': the prompt text as it is.")
    n_layer: int = _f(4, "Demo model: transformer layers.", ge=1)
    n_embd: int = _f(128, "Demo model: width.", ge=1)
    n_head: int = _f(4, "Demo model: attention heads.", ge=1)
    n_positions: int = _f(64, "Demo model: context length.", ge=8)
    pretrain_steps: int = _f(300, "Demo model: pretraining steps on the task's bugged data.", ge=1)
    pretrain_batch_size: int = _f(128, "Demo model: pretraining batch size.", ge=1)
    pretrain_lr: float = _f(2e-3, "Demo model: peak learning rate (cosine to a tenth).", gt=0)
    bug_rate: float = _f(0.6, "Demo model: share of pretraining answers carrying the task's bug.",
                         ge=0, le=1)


@dataclass
class GenerationConfig:
    """Sampling N responses per prompt."""

    n: int = _f(8, "Samples per prompt (the N of best-of-N).", ge=1)
    temperature: float = _f(1.0, "Sampling temperature.", ge=0)
    top_k: int = _f(0, "Keep the k most likely tokens (0: off).", ge=0)
    top_p: float = _f(1.0, "Nucleus sampling mass (1.0: off).", gt=0, le=1)
    max_new_tokens: int = _f(0, "Longest completion in tokens (0: from the task).", ge=0)
    batch_prompts: int = _f(256, "Prompts per sampling batch (each expanded N times).", ge=1)
    waves: str = _f("", "Adaptive best-of-N: comma-separated wave sizes, e.g. '2,2,4'; a prompt "
                    "stops once its best is good enough (the stop_* rules), at most n samples per "
                    "prompt on average. Empty: plain best-of-N.")
    stop_score: float | None = _f(None, "Waves: a prompt stops once its best reward, standardised "
                                  "by the first wave's rewards, reaches this (empty: off).")
    stop_gain: float | None = _f(None, "Waves: a prompt stops once the expected gain of another "
                                 "wave (standardised units) is below this (empty: off).", ge=0)
    stop_margin: float | None = _f(0.02, "Waves: a prompt stops once its best standardised reward "
                                   "beats its best other distinct completion's by this (empty: "
                                   "off).", ge=0)
    stop_unanimous: int | None = _f(None, "Waves: a prompt stops once it has at least this many "
                                    "samples, all the same completion (empty: off).", ge=2)
    stop_loser_quantile: float | None = _f(None, "Waves: a prompt stops once its best is above "
                                           "this quantile of the round's losers (samples that "
                                           "scored below another answer of their prompt) "
                                           "(empty: off).", gt=0, le=1)
    stop_coverage: float | None = _f(0.1, "Waves: a prompt stops once the chance that the rest of "
                                     "its n samples draws any completion not seen yet (by the "
                                     "sampler's own probabilities) is at most this (empty: off).",
                                     ge=0, le=1)
    engine: Engine = _f("transformers", "Round sampling engine: 'transformers' (in-process) or "
                        "'vllm' (a worker process in its own venv; evaluation stays on "
                        "transformers).")
    vllm_python: str = _f(".venv-vllm/bin/python", "vLLM engine: the worker's Python (relative: "
                          "to the working directory, else to the source checkout; `make vllm`).")
    vllm_dtype: Literal["float32", "bfloat16", "float16", "auto"] = _f(
        "float32", "vLLM engine: weight/activation dtype (float32: greedy rows equal the "
        "transformers engine's; bfloat16 on GPUs).")
    vllm_enforce_eager: bool = _f(True, "vLLM engine: no torch.compile/CUDA graphs (starts "
                                  "faster; turn off on GPUs for faster decoding).")
    vllm_tensor_parallel_size: int = _f(1, "vLLM engine: GPUs one model is split over.", ge=1)
    vllm_gpu_memory_utilization: float = _f(
        0.9, "vLLM engine: share of GPU memory it may take (the worker is stopped before SFT).",
        gt=0, le=1)


@dataclass
class PreferenceConfig:
    """The preference (reward) model: seed training and the per-round refresh."""

    seed_pairs: int = _f(6000, "Synthetic labelled pairs for the first preference model.", ge=2)
    seed_labels_path: str | None = _f(None, "Parquet of human seed judgements (replaces seed_pairs).")
    base_path: str | None = _f(
        None, "Local sequence-classifier folder to start from (else the policy); "
        "tools/preference_base.py builds one from an encoder.")
    reward: RewardKind = _f("head", "'head': a sequence classifier's score head on the last token; "
                            "'likelihood': the causal LM's log-likelihood of the completion, "
                            "trained by the same BT loss (judges answers token by token).")
    nll_weight: float = _f(0.0, "Likelihood reward: weight of the preferred completion's "
                           "per-token negative log-likelihood (weighted by |2hp - 1|: ties teach "
                           "nothing) added to the BT "
                           "loss, so the LM learns to produce what the labels prefer, not only "
                           "to rank it (RPO's regulariser); 0: BT alone.", ge=0)
    seed_epochs: float = _f(2.0, "Epochs over the seed pairs.", gt=0)
    pairs_per_round: int = _f(2000, "On-policy pairs of distinct completions labelled per round.", ge=1)
    pair_strategy: PairStrategy = _f("top_vs_other", "'top_vs_other' (previous model's favourite "
                                     "vs another), 'random', or 'active' (the pairs among each "
                                     "prompt's top candidates the previous model is least sure of).")
    active_top_k: int = _f(4, "Active pairs: each prompt's top distinct candidates (by the previous "
                           "model's conservative score) the pairs are drawn from.", ge=2)
    ensemble_heads: int = _f(1, "Reward heads on one shared body, each trained on its own "
                             "bootstrap of the pairs: reward = their mean, spread = their std.",
                             ge=1)
    replay_pairs: int = _f(2000, "Pairs replayed from earlier rounds at each refresh.", ge=0)
    epochs: float = _f(1.0, "Epochs over a round's pairs plus replay.", gt=0)
    learning_rate: float = _f(2e-4, "Refresh learning rate (5e-4 and above is noisy).", gt=0)
    seed_learning_rate: float = _f(5e-4, "Learning rate of the first preference model.", gt=0)
    batch_size: int = _f(64, "Pairs per training batch.", ge=1)
    heldout_fraction: float = _f(0.1, "Share of labelled pairs held out for pair accuracy.",
                                 gt=0, lt=1)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class AnnotatorConfig:
    """Who labels pairs (soft label hp in [0, 1])."""

    kind: AnnotatorKind = _f("simulated", "'simulated' (verifier + noise), 'file' (human "
                             "judgements made beforehand), 'reward_model', 'judge' (an LLM), "
                             "'mixed' or 'human' (a round asks people, waits and resumes).")
    label_noise: float = _f(0.1, "Simulated: probability a decided label is flipped.", ge=0, le=0.5)
    path: str | None = _f(None, "File: Parquet with prompt, completion_a, completion_b, hp.")
    reward_model_path: str | None = _f(None, "Reward model: local one-output sequence-classifier "
                                       "folder (with its tokenizer).")
    temperature: float = _f(1.0, "Reward model: hp = sigmoid((r_a - r_b) / temperature).", gt=0)
    judge_path: str | None = _f(None, "Judge: local causal-LM folder (its tokenizer and chat "
                                "template, if any).")
    judge_template: str | None = _f(None, "Judge: text file with {prompt}, {a}, {b}; empty: the "
                                    "built-in A-or-B question.")
    judge_engine: Engine = _f("transformers", "Judge: 'transformers' (in the step's process) or "
                              "'vllm' (a worker with the generation.vllm_* settings).")
    mix: str = _f("", "Mixed: weighted kinds of this section, e.g. "
                  "'simulated=0.5,reward_model=0.5'.")
    inbox: str | None = _f(None, "Human: folder of label requests and answers (<inbox>/<round>/); "
                           "empty: $DAGSTER_HOME/labelling.")
    wait_hours: float = _f(24.0, "Human: hours a round waits for its labels; then its refresh is "
                           "skipped (the previous preference model is kept).", gt=0)


@dataclass
class SelectionConfig:
    """Which response per prompt is kept (SFT) and which pairs become DPO pairs."""

    selector: Selector = _f("preference", "'preference', 'verifier', or 'mix'.")
    mix_weight: float = _f(0.5, "Mix: weight of the verifier score (1 - weight on the reward).",
                           ge=0, le=1)
    threshold: float | None = _f(None, "Keep the best only if its selection score is at least this.")
    uncertainty_penalty: float = _f(0.0, "Conservative selection: the reward part of the score is "
                                    "mean - this * spread over the preference heads.", ge=0)
    dpo_min_margin: float = _f(0.5, "Minimum best-minus-worst score for a DPO pair.", ge=0)
    dpo_pairs_per_prompt: int = _f(1, "DPO pairs per prompt: the best against each of the k "
                                   "worst distinct completions (verifier pairing: the k best-scored "
                                   "wrong ones).", ge=1)
    dpo_pairing: DpoPairing = _f("score", "'score': best vs worst by selection score (at least "
                                 "dpo_min_margin apart); 'verifier': a right completion (the "
                                 "best-scored) vs wrong ones of the same prompt, any margin.")
    rule: SelectionRule = _f("argmax", "'argmax' (the best per prompt), 'top_k' (the selection.top_k "
                             "best distinct completions per prompt) or 'random' (a seeded random "
                             "distinct completion per prompt: the baseline).")
    top_k: int = _f(2, "Rule 'top_k': distinct completions kept per prompt.", ge=1)
    percentile: float | None = _f(None, "Keep only prompts whose best score is in the top this "
                                  "percent of the round's best scores (ties at the cut kept).",
                                  gt=0, le=100)
    rising_percentile_step: float = _f(0.0, "ReST: the kept percentile shrinks by this many points "
                                       "per round after the first (round rN: minus step * (N-1)).",
                                       ge=0)
    min_percentile: float = _f(10.0, "Floor of the rising percentile.", gt=0, le=100)
    normalize: Normalize = _f("none", "'prompt': z-score each prompt's scores among its candidates "
                              "before ranking, percentile and threshold.")
    length_penalty: float = _f(0.0, "Rank by score minus this * completion length in characters "
                               "(after normalisation).", ge=0)
    best_ever: bool = _f(False, "Earlier rounds' kept rows, rescored by this round's preference "
                         "model, compete with this round's samples; every prompt seen keeps its best.")


@dataclass
class SFTConfig:
    """Training the candidate from the champion: SFT on the kept set (and/or DPO on the pairs)."""

    method: TrainingMethod = _f("sft", "'sft' (on sft_dataset), 'dpo' (on dpo_pairs, reference "
                                "model = the champion) or 'sft+dpo' (SFT, then DPO with the SFT "
                                "result as reference); settings of the DPO part: section dpo.")
    epochs: float = _f(1.0, "Epochs over the kept set (budget in epochs, never seconds).", gt=0)
    learning_rate: float = _f(5e-4, "Peak learning rate (linear decay).", gt=0)
    batch_size: int = _f(64, "Rows per batch.", ge=1)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DPOConfig:
    """DPO (TRL's DPOTrainer) when sft.method is 'dpo' or 'sft+dpo'; LoRA: sft.lora."""

    beta: float = _f(0.1, "Strength of the pull towards the reference model (DPO's beta).", gt=0)
    epochs: float = _f(1.0, "Epochs over the round's DPO pairs.", gt=0)
    learning_rate: float = _f(1e-4, "Peak learning rate (linear decay).", gt=0)
    batch_size: int = _f(32, "Pairs per batch.", ge=1)


@dataclass
class GateConfig:
    """When a candidate is refused promotion."""

    judge: GateJudge = _f(
        "auto", "Who compares candidate and champion on the gate prompts: 'auto' (the verifier; "
        "without one gate.hook, else gate.reward_model_path, else a model annotator, else the seed "
        "preference model), 'verifier', 'reward_model', 'hook' or 'annotator'.")
    reward_model_path: str | None = _f(
        None, "Judge 'reward_model': a held-back one-output sequence-classifier folder (with its "
        "own tokenizer) that no round trains.")
    hook: str | None = _f(None, "Judge 'hook': 'package.module:function' taking (prompts, "
                          "completions) and returning one score per completion.")
    pairs_path: str | None = _f(
        None, "Held-out labelled pairs (judgements-file format): the round's preference model "
        "must rank them no worse than the previous one minus gate.tolerance.")
    min_pair_acc: float = _f(0.6, "Refuse a round whose preference model's held-out pair accuracy "
                             "is below this (not applied when it had no decided held-out pairs, or "
                             "when selection.selector is 'verifier').",
                             ge=0, le=1)
    tolerance: float = _f(0.01, "Refuse a candidate whose gate value (accuracy, mean score) is "
                          "below the champion's minus this (win rate: below 0.5 minus this).")
    hacking_reward_margin: float = _f(0.05, "Reward rise that, with accuracy falling, flags hacking.",
                                      ge=0)
    hacking_acc_margin: float = _f(0.01, "Accuracy fall that, with reward rising, flags hacking.",
                                   ge=0)


@dataclass
class MonitorsConfig:
    """Collapse and reward-hacking monitors (checks on round_eval, metrics ``monitor/<name>``);
    a monitor whose value is not measured (no verifier, no held-out pairs, constant lengths)
    passes."""

    min_distinct_share: float = _f(0.15, "Distinct completions per prompt, as a share of N "
                                   "(mean over prompts), at least this.", ge=0, le=1)
    min_distinct_1: float = _f(0.0, "Distinct words over all completions / all words (whitespace "
                               "split), at least this.", ge=0, le=1)
    min_distinct_2: float = _f(0.0, "Distinct word bigrams over all completions / all bigrams, at "
                               "least this.", ge=0, le=1)
    max_all_same_share: float = _f(0.9, "Share of prompts whose N samples are all the same, at "
                                   "most this.", ge=0, le=1)
    max_length_reward_corr: float = _f(0.5, "Pearson correlation of completion length "
                                       "(characters) and reward, at most this.", ge=-1, le=1)
    max_wrong_pick_share: float = _f(0.5, "Verifier tasks: share of prompts with a right "
                                     "completion whose highest-reward completion is wrong, at "
                                     "most this.", ge=0, le=1)
    min_reward_verifier_rank_corr: float = _f(0.0, "Verifier tasks: Spearman correlation of reward "
                                              "and verifier score over all completions, at least "
                                              "this.", ge=-1, le=1)
    max_kl: float = _f(50.0, "KL(candidate || base policy) in nats per completion, estimated on "
                       "monitors.kl_samples completions sampled from the candidate, at most this.")
    kl_samples: int = _f(256, "Completions (seeded draw of the round's prompts) the KL estimate "
                         "samples and scores; 0: not measured.", ge=0)
    max_ece: float = _f(0.2, "Expected calibration error of sigmoid(r_a - r_b) against the round's "
                        "held-out labels, at most this.", ge=0, le=1)
    ece_bins: int = _f(5, "Equal-width probability bins of the calibration error.", ge=1)
    blocking: str = _f("", "Comma-separated monitor names whose failure refuses promotion "
                       "(severity ERROR); the others only warn. Empty: none blocking.")


@dataclass
class StorageConfig:
    """Where tables, checkpoints and MLflow records live."""

    base_uri: str | None = _f(None, "Where assets and checkpoints live (path or fsspec URI); empty: "
                              "$DAGSTER_HOME/assets.")
    endpoint_url: str | None = _f(None, "Endpoint of an S3-compatible store for an s3:// base_uri "
                                  "(MinIO, Ceph...); empty: $AWS_ENDPOINT_URL, else AWS.")
    mlflow_tracking_uri: str | None = _f(None, "MLflow tracking URI; empty: sqlite in $DAGSTER_HOME.")
    mlflow_experiment: str = _f("rs_pipeline", "MLflow experiment name.")


@dataclass
class InputsConfig:
    """What happens to input rows a user would rather drop than fix."""

    quarantine: Literal["drop", "refuse"] = _f(
        "drop", "Duplicate prompts/labels and pairs of identical completions: 'drop' them (counted "
        "in the asset metadata) or 'refuse' the file.")


@dataclass
class RecoveryConfig:
    """How long steps keep their work so a crashed run continues where it stopped."""

    shard_prompts: int = _f(512, "Generation and scoring commit their rows every this many prompts.",
                            ge=1)
    checkpoint_steps: int = _f(100, "Training saves a resumable checkpoint every this many steps "
                               "(0: never; removed when training ends).", ge=0)


@dataclass
class ScaleConfig:
    """Running a round's steps in parallel (README "Running at scale"): none of these change a
    row of any output."""

    shards: int = _f(1, "Generation and scoring each fan out into this many parallel steps (each "
                     "takes every shards-th block of recovery.shard_prompts prompts).", ge=1)
    executor: Executor = _f("in_process", "Where round steps run: 'in_process' (one process), "
                            "'multiprocess' (a process per step) or 'dask' (a dask cluster).")
    workers: int = _f(2, "Multiprocess: steps at once; dask: LocalCluster worker processes.", ge=1)
    dask_address: str | None = _f(None, "Dask: scheduler address of a running cluster (e.g. "
                                  "tcp://host:8786); empty: a LocalCluster per run.")
    torch_threads: int = _f(0, "Threads torch uses in each step process (0: torch's default); "
                            "set 1 when several steps share a machine's cores.", ge=0)
    training_launcher: TrainingLauncher = _f(
        "in_process", "Where policy_checkpoint trains: 'in_process' (the step's own process) or "
        "'accelerate' (accelerate launch, run by Dagster Pipes).")
    training_processes: int = _f(1, "Accelerate launcher: training processes (one per GPU).", ge=1)
    accelerate_config: str | None = _f(None, "Accelerate launcher: an accelerate config file "
                                       "(DDP/FSDP: examples/accelerate/); empty: one machine.")


@dataclass
class ScheduleConfig:
    """The nightly round."""

    enabled: bool = _f(False, "Start the nightly_round schedule running (else off until turned on).")
    cron: str = _f("0 2 * * *", "When the nightly round starts (cron).")
    timezone: str = _f("", "IANA time zone of the cron; empty: this machine's local time.")


@dataclass
class ContinuousConfig:
    """Continuous mode: the continuous_rounds sensor chains rounds back to back (their size is
    task.round_size and preference.pairs_per_round)."""

    enabled: bool = _f(False, "Start the continuous_rounds sensor running (else off until turned on).")
    max_rounds: int = _f(0, "Chain no round past this many rounds in the home (0: no limit).", ge=0)
    max_generated_tokens: int = _f(0, "Chain no round once the home's rounds have generated this "
                                   "many tokens (0: no limit).", ge=0)
    interval_seconds: int = _f(30, "How often the sensor looks whether the latest round ended.",
                               ge=1)


@dataclass
class PipelineConfig:
    """Every setting of a run (one YAML file)."""

    seed: int = _f(0, "Seeds every random choice: same config, same rows.", ge=0)
    task: TaskConfig = field(default_factory=TaskConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)
    inputs: InputsConfig = field(default_factory=InputsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    continuous: ContinuousConfig = field(default_factory=ContinuousConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_dict(self, *names: str) -> dict[str, Any]:
        return {n: dataclasses.asdict(getattr(self, n)) for n in names}


# Per-task presets the demo applies (measured in NOTES/README): gentle SFT keeps rev8 stable,
# addition needs a slightly larger step and leans on the gate.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    "rev8": {"policy": {"pretrain_steps": 300}, "sft": {"epochs": 1.0, "learning_rate": 5e-4}},
    # addition: a reward head cannot check sums (kept precision ~0.3, champion stalls at ~0.5);
    # the policy's own LM as the reward, taught by BT plus the preferred answers' likelihood,
    # selects ~0.85-0.95 right and the champion matches the verifier-selected run (README
    # "Judges that can add")
    "addition": {
        "policy": {"pretrain_steps": 400},
        "preference": {"reward": "likelihood", "nll_weight": 3.0, "seed_epochs": 6.0,
                       "seed_learning_rate": 1e-3},
        "sft": {"epochs": 3.0, "learning_rate": 5e-4},
        "gate": {"tolerance": 0.02},
    },
}

_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


def _section(f: dataclasses.Field) -> type | None:
    sub = f.default_factory
    return sub if sub is not dataclasses.MISSING and dataclasses.is_dataclass(sub) else None


def _build(cls, data: Any, where: str, problems: list[str]):
    if not isinstance(data, dict):
        problems.append(f"setting {where or '<root>'}: expected a mapping, got {data!r}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            problems.append(f"setting {name}: unknown (known: {', '.join(fields)})")
            continue
        sub = _section(fields[key])
        if sub is not None:
            kwargs[key] = _build(sub, value if value is not None else {}, name, problems)
            continue
        try:
            kwargs[key] = _check(fields[key], hints[key], value, name)
        except InputError as exc:
            problems.append(str(exc))
    return cls(**kwargs)


def _check(f: dataclasses.Field, hint: Any, value: Any, name: str) -> Any:
    value = _coerce(hint, value, name)
    for key, (ok, sign) in _BOUNDS.items():
        bound = f.metadata.get(key)
        if bound is not None and value is not None and not ok(value, bound):
            raise InputError(f"setting {name}: must be {sign} {bound}, got {value!r}")
    return value


def _coerce(hint: Any, value: Any, name: str) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Literal:
        if value not in args:
            raise InputError(f"setting {name}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if type(None) in args:  # Optional[X]
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool or hint is str:
        if not isinstance(value, hint):
            raise InputError(f"setting {name}: expected {hint.__name__}, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not (
                isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise InputError(f"setting {name}: expected int, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise InputError(f"setting {name}: expected float, got {value!r}")
        try:
            return float(value)  # YAML reads 1e-4 as a string
        except (TypeError, ValueError):
            raise InputError(f"setting {name}: expected float, got {value!r}") from None
    return value


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_dict(data: dict[str, Any] | None, where: str = "") -> PipelineConfig:
    """Settings from a mapping; every problem (type, range, choice, unknown key) in one error."""
    problems: list[str] = []
    cfg = _build(PipelineConfig, data or {}, "", problems)
    if problems:
        prefix = f"{where}: " if where else ""
        raise InputError(prefix + "\n".join(problems) if len(problems) == 1
                         else f"{prefix}{len(problems)} problems:\n  " + "\n  ".join(problems))
    return cfg


def load_config(path: str | Path) -> PipelineConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise InputError(f"config file {path} is not valid YAML: {exc}") from None
    return config_from_dict(data, where=f"config file {path}")


def demo_config(task: str = "rev8", **overrides: Any) -> PipelineConfig:
    """The demo's settings for ``task`` with its preset applied (built-in tasks have one; a
    plug-in task starts from the defaults). The name itself is resolved when settings load."""
    data = merge({"task": {"name": task}}, TASK_PRESETS.get(task, {}))
    return config_from_dict(merge(data, overrides))


def documented_settings(cls: type = PipelineConfig, prefix: str = ""):
    """Every leaf setting as (dotted name, default, one-line doc), in declaration order."""
    for f in dataclasses.fields(cls):
        sub = _section(f)
        if sub is not None:
            yield from documented_settings(sub, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f.default, f.metadata.get("doc", "")


def settings_table() -> str:
    """The README's settings table (Markdown)."""
    rows = [f"| `{n}` | `{d}` | {doc} |" for n, d, doc in documented_settings()]
    return "\n".join(["| setting | default | meaning |", "|---|---|---|", *rows])
