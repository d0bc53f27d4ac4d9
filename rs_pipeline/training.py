"""Supervised fine-tuning on completions (pretraining the demo policy uses the same path).

The loop is transformers' ``Trainer``, rows are a ``datasets.Dataset`` and batches come from
TRL's language-modelling collator (right padding, labels padded with -100). This module only
encodes rows (loss on completion tokens only) and picks the arguments.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import PrinterCallback, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from rs_pipeline.chat import ChatMode, end_of_turn_id, render_prompts

IGNORE = -100  # label of a token that carries no loss


def encode_completions(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                       chat_template: ChatMode = "auto") -> list[dict]:
    """Token ids of prompt + completion + end, with labels masked (-100) over the prompt.

    The prompt is what the policy is given when sampling (``chat.render_prompts``: templated
    for a chat policy); the end is the template's end-of-turn token (``<|im_end|>``), else EOS.
    """
    p_ids = render_prompts(tokenizer, prompts, chat_template)
    c_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    eos = end_of_turn_id(tokenizer, chat_template)
    return [{"input_ids": p + c + [eos], "labels": [IGNORE] * len(p) + c + [eos]}
            for p, c in zip(p_ids, c_ids)]


def training_args(output_dir: str, *, lr: float, batch_size: int, seed: int,
                  epochs: float | None = None, max_steps: int | None = None,
                  scheduler: str = "linear", min_lr_rate: float | None = None,
                  warmup_steps: int = 0, save_steps: int = 0,
                  args_cls: type = TrainingArguments, **extra: Any) -> TrainingArguments:
    """Trainer arguments: no reporting, seeded; a resumable checkpoint (model, optimizer,
    scheduler, RNG) every ``save_steps`` steps (0: none), only the latest kept. ``args_cls``
    (e.g. TRL's ``DPOConfig``) takes ``extra`` arguments of its own."""
    kwargs: dict[str, Any] = dict(extra)
    if min_lr_rate is not None:
        kwargs["lr_scheduler_kwargs"] = {"min_lr_rate": min_lr_rate}
    if save_steps:
        kwargs.update(save_strategy="steps", save_steps=save_steps, save_total_limit=1)
    else:
        kwargs["save_strategy"] = "no"
    return args_cls(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs if epochs is not None else 1.0,
        max_steps=max_steps if max_steps is not None else -1,
        learning_rate=lr,
        lr_scheduler_type=scheduler,
        warmup_steps=warmup_steps,
        weight_decay=0.0,
        logging_steps=1,  # per-step losses, kept in checkpoints: train_loss survives a resume
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **kwargs,
    )


def run_trainer(model, rows: datasets.Dataset, collator, *, trainer_cls: type = Trainer,
                checkpoint_dir: Path | None = None, checkpoint_steps: int = 0,
                trainer_kwargs: dict[str, Any] | None = None, **args: Any) -> dict[str, float]:
    """Train ``model`` in place with ``trainer_cls`` (given ``trainer_kwargs`` too); returns
    loss, steps and seconds, and the last logged value of any ``rewards/*`` metric (DPO).

    With ``checkpoint_dir`` and ``checkpoint_steps``, a checkpoint is kept there every
    ``checkpoint_steps`` steps and a re-run continues from the latest one (same batches, same
    result as an uninterrupted run); the folder is removed when training ends. Otherwise the
    trainer's folder is temporary.
    """
    keep = checkpoint_dir is not None and checkpoint_steps > 0
    model.train()
    with contextlib.ExitStack() as stack:
        if keep:
            out = str(checkpoint_dir)
            Path(out).mkdir(parents=True, exist_ok=True)
        else:
            out = stack.enter_context(tempfile.TemporaryDirectory(prefix="rs-trainer-"))
        trainer = trainer_cls(model=model, args=training_args(
            out, save_steps=checkpoint_steps if keep else 0, **args), train_dataset=rows,
            data_collator=collator, **(trainer_kwargs or {}))
        trainer.remove_callback(PrinterCallback)  # the metrics are returned, not printed
        last = last_complete_checkpoint(out) if keep else None
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=last)
        seconds = time.perf_counter() - start
    if keep:
        shutil.rmtree(out, ignore_errors=True)
    model.eval()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    rewards = {k: v for h in trainer.state.log_history if "loss" in h for k, v in h.items()
               if k.startswith("rewards/")}
    return {"train_loss": sum(losses) / len(losses) if losses else float(result.training_loss),
            "steps": int(result.global_step), "seconds": seconds,
            "resumed_from_step": _step_of(last), **rewards}


def last_complete_checkpoint(folder: str) -> str | None:
    """The newest Trainer checkpoint in ``folder`` that was written to the end (the Trainer
    writes ``trainer_state.json`` last); a half-written one, left by a kill during the save, is
    removed, and the one before it (if kept) is used."""
    while (last := get_last_checkpoint(folder)) is not None:
        if (Path(last) / "trainer_state.json").exists():
            return last
        shutil.rmtree(last, ignore_errors=True)
    return None


def _step_of(checkpoint: str | None) -> int:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0


def train_on_completions(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], *,
                         lr: float, batch_size: int, seed: int, epochs: float | None = None,
                         max_steps: int | None = None, scheduler: str = "linear",
                         min_lr_rate: float | None = None, checkpoint_dir: Path | None = None,
                         checkpoint_steps: int = 0,
                         chat_template: ChatMode = "auto") -> dict[str, float]:
    """Fine-tune ``model`` in place on (prompt, completion) rows; returns loss, steps, seconds."""
    if not prompts:
        raise ValueError("nothing to train on: the kept set is empty")
    rows = datasets.Dataset.from_list(encode_completions(tokenizer, prompts, completions,
                                                         chat_template))
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                               return_position_ids=False)
    return run_trainer(model, rows, collator, lr=lr, batch_size=batch_size, seed=seed,
                       epochs=epochs, max_steps=max_steps, scheduler=scheduler,
                       min_lr_rate=min_lr_rate, warmup_steps=min(20, (max_steps or 0) // 20),
                       checkpoint_dir=checkpoint_dir, checkpoint_steps=checkpoint_steps)
