"""Supervised fine-tuning on completions (pretraining the demo policy uses the same path).

The loop is transformers' ``Trainer``; this module only encodes rows (loss on completion tokens
only), pads batches and picks the arguments.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainingArguments


def encode_completions(tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> list[dict]:
    """Token ids of prompt + completion + EOS, with labels masked (-100) over the prompt."""
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    rows = []
    for p, c in zip(p_ids, c_ids):
        ids = p + c + [eos]
        rows.append({"input_ids": ids, "labels": [-100] * len(p) + c + [eos]})
    return rows


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def pad_batch(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` (pad id), ``labels`` (-100) and build the attention mask."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(r["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def training_args(*, lr: float, batch_size: int, seed: int, epochs: float | None = None,
                  max_steps: int | None = None, scheduler: str = "linear",
                  min_lr_rate: float | None = None, warmup_steps: int = 0) -> TrainingArguments:
    """Trainer arguments for small CPU-friendly runs: no checkpoints, no reporting, seeded."""
    kwargs: dict[str, Any] = {}
    if min_lr_rate is not None:
        kwargs["lr_scheduler_kwargs"] = {"min_lr_rate": min_lr_rate}
    return TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="rs-trainer-"),
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs if epochs is not None else 1.0,
        max_steps=max_steps if max_steps is not None else -1,
        learning_rate=lr,
        lr_scheduler_type=scheduler,
        warmup_steps=warmup_steps,
        weight_decay=0.0,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **kwargs,
    )


def run_trainer(trainer: Trainer) -> dict[str, float]:
    trainer.remove_callback(PrinterCallback)  # the metrics are returned, not printed
    start = time.perf_counter()
    out = trainer.train()
    return {
        "train_loss": float(out.training_loss),
        "steps": int(out.global_step),
        "seconds": time.perf_counter() - start,
    }


def train_on_completions(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], *,
                         lr: float, batch_size: int, seed: int, epochs: float | None = None,
                         max_steps: int | None = None, scheduler: str = "linear",
                         min_lr_rate: float | None = None) -> dict[str, float]:
    """Fine-tune ``model`` in place on (prompt, completion) rows; returns loss, steps, seconds."""
    if not prompts:
        raise ValueError("nothing to train on: the kept set is empty")
    rows = encode_completions(tokenizer, prompts, completions)
    model.train()
    trainer = Trainer(
        model=model,
        args=training_args(lr=lr, batch_size=batch_size, seed=seed, epochs=epochs,
                           max_steps=max_steps, scheduler=scheduler, min_lr_rate=min_lr_rate,
                           warmup_steps=min(20, (max_steps or 0) // 20)),
        train_dataset=ListDataset(rows),
        data_collator=lambda b: pad_batch(b, tokenizer.pad_token_id),
    )
    metrics = run_trainer(trainer)
    model.eval()
    return metrics
