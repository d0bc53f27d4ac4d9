"""The preference (reward) model: a one-output sequence classifier trained with soft-label BT.

Loss for a pair (A, B) with soft label ``hp`` = P(A preferred):
``-hp * log s(r_A - r_B) - (1 - hp) * log s(r_B - r_A)``, i.e. binary cross-entropy of the
reward margin against ``hp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import torch
import torch.nn.functional as F
from transformers import Trainer

from rs_pipeline.pairs import LabelledPair
from rs_pipeline.preference_inputs import context_length, encode, pad_rows
from rs_pipeline.training import run_trainer


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, hp: torch.Tensor) -> torch.Tensor:
    """Mean soft-label Bradley-Terry loss; ``hp`` in [0, 1] is the probability A is preferred."""
    return F.binary_cross_entropy_with_logits(r_a - r_b, hp.to(r_a.dtype))


def _encode(model, tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> list[dict]:
    return encode(tokenizer, prompts, completions, context_length(model.config, tokenizer))


def rewards(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One reward per row of a padded batch (``input_ids``, ``attention_mask``, segment ids)."""
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return model(**{k: batch[k] for k in keys if k in batch}).logits[:, 0]


class BradleyTerryTrainer(Trainer):
    """``Trainer`` whose batches are pairs: A and B go through the model in one forward, and
    the loss is the soft-label BT loss (the one custom piece of preference training)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        r = rewards(model, inputs)
        half = r.shape[0] // 2
        loss = bt_loss(r[:half], r[half:], inputs["hp"])
        return (loss, {"rewards": r}) if return_outputs else loss


@dataclass
class SoftPairCollator:
    """Pairs into one right-padded batch (every A, then every B) with each pair's soft label."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        out = pad_rows([e["a"] for e in examples] + [e["b"] for e in examples], self.pad_token_id)
        out["hp"] = torch.tensor([e["hp"] for e in examples], dtype=torch.float32)
        return out


def train_preference(model, tokenizer, pairs: Sequence[LabelledPair], *, epochs: float, lr: float,
                     batch_size: int, seed: int, **checkpointing) -> dict[str, float]:
    """Fine-tune ``model`` in place on labelled pairs; returns loss, steps, seconds."""
    if not pairs:
        raise ValueError("no labelled pairs to train the preference model on")
    prompts = [p[0] for p in pairs]
    rows = datasets.Dataset.from_dict({
        "a": _encode(model, tokenizer, prompts, [p[1] for p in pairs]),
        "b": _encode(model, tokenizer, prompts, [p[2] for p in pairs]),
        "hp": [float(p[3]) for p in pairs]})
    model.config.pad_token_id = tokenizer.pad_token_id
    return run_trainer(model, rows, SoftPairCollator(pad_token_id=tokenizer.pad_token_id),
                       trainer_cls=BradleyTerryTrainer, lr=lr, batch_size=batch_size, seed=seed,
                       epochs=epochs, **checkpointing)


@torch.no_grad()
def score(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
          batch_size: int = 1024) -> list[float]:
    """The reward of each (prompt, completion)."""
    model.eval()
    rows = _encode(model, tokenizer, prompts, completions)
    out: list[float] = []
    for i in range(0, len(rows), batch_size):
        out.extend(rewards(model, pad_rows(rows[i : i + batch_size], tokenizer.pad_token_id)).tolist())
    return out


def pair_accuracy(model, tokenizer, pairs: Sequence[LabelledPair]) -> float | None:
    """Share of decided pairs (hp != 0.5) whose reward order matches the label; None if none."""
    decided = [p for p in pairs if p[3] != 0.5]
    if not decided:
        return None
    prompts = [p[0] for p in decided]
    ra = score(model, tokenizer, prompts, [p[1] for p in decided])
    rb = score(model, tokenizer, prompts, [p[2] for p in decided])
    return sum((a > b) == (p[3] > 0.5) for a, b, p in zip(ra, rb, decided)) / len(decided)
