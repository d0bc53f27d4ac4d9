"""LoRA (peft) as a way to fine-tune: wrap the model, train it through the usual trainer, merge.

Only the adapters (and, for a sequence classifier, its score head) are trained; the base weights
stay frozen. After training the adapters are merged into the weights, so a checkpoint stays a
plain Hugging Face folder (no adapter files) and its content id is over the merged weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rs_pipeline.config import LoraConfig
from rs_pipeline.errors import InputError
from rs_pipeline.records import LoraUse

TaskType = Literal["CAUSAL_LM", "SEQ_CLS"]


def targets(setting: str) -> str | list[str] | None:
    """``target_modules`` for peft: None (its per-architecture default), 'all-linear', or names."""
    setting = setting.strip()
    if setting in ("auto", "all-linear"):
        return None if setting == "auto" else setting
    return [name.strip() for name in setting.split(",") if name.strip()]


def wrap(model, lora: LoraConfig, task_type: TaskType, setting: str) -> PeftModel:
    """``model`` with fresh LoRA adapters; only they (and a classifier's head) are trainable.
    ``setting`` names the config section in errors (e.g. 'sft.lora')."""
    wanted = targets(lora.target_modules)
    config = PeftLoraConfig(task_type=task_type, r=lora.r, lora_alpha=lora.alpha,
                            lora_dropout=lora.dropout, target_modules=wanted)
    names = [n for n, _ in model.named_modules()]
    unknown = [t for t in wanted if not any(n == t or n.endswith(f".{t}") for n in names)] \
        if isinstance(wanted, list) else []
    problem = f"no module is named {', '.join(unknown)}" if unknown else None
    if problem is None:
        try:
            return get_peft_model(model, config)
        except ValueError as exc:  # an architecture peft has no default for, ...
            problem = str(exc)
    raise InputError(f"setting {setting}.target_modules: {lora.target_modules!r} does not fit the "
                     f"{type(model).__name__} model ({problem})")


def problem(config, lora: LoraConfig, task_type: TaskType, setting: str) -> str | None:
    """Why ``lora`` cannot wrap a model of this ``config``, or None: tried on a skeleton without
    weights (meta device), so preflight can say it before any model work."""
    if not lora.enabled:
        return None
    config = copy.deepcopy(config)
    config.num_labels = 1
    auto = AutoModelForCausalLM if task_type == "CAUSAL_LM" else AutoModelForSequenceClassification
    with torch.device("meta"):
        try:
            wrap(auto.from_config(config), lora, task_type, setting)
        except InputError as exc:
            return str(exc)
    return None


def usage(peft_model: PeftModel) -> LoraUse:
    config = peft_model.peft_config["default"]
    trainable, total = peft_model.get_nb_trainable_parameters()
    return LoraUse(r=config.r, alpha=float(config.lora_alpha), dropout=config.lora_dropout,
                   target_modules=sorted(config.target_modules),
                   modules_to_save=sorted(config.modules_to_save or []),
                   trainable_params=int(trainable), total_params=int(total))


def fine_tune(model, lora: LoraConfig, task_type: TaskType, setting: str,
              train: Callable[[object], dict]) -> tuple[object, dict, LoraUse | None]:
    """Run ``train(model)``: directly, or, with ``lora.enabled``, on a LoRA-wrapped model whose
    adapters are then merged. Returns (the trained plain model, train's metrics, LoRA record)."""
    if not lora.enabled:
        return model, train(model), None
    peft_model = wrap(model, lora, task_type, setting)
    record = usage(peft_model)
    metrics = train(peft_model)
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged, metrics, record
