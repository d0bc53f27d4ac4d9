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
from trl.trainer.reward_trainer import DataCollatorForPreference
from trl.trainer.utils import pad

from rs_pipeline.pairs import LabelledPair
from rs_pipeline.training import run_trainer


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, hp: torch.Tensor) -> torch.Tensor:
    """Mean soft-label Bradley-Terry loss; ``hp`` in [0, 1] is the probability A is preferred."""
    return F.binary_cross_entropy_with_logits(r_a - r_b, hp.to(r_a.dtype))


def _encode(tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> list[list[int]]:
    p = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    c = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    return [a + b + [tokenizer.eos_token_id] for a, b in zip(p, c)]


def rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]


class BradleyTerryTrainer(Trainer):
    """``Trainer`` whose batches are pairs: A and B go through the model in one forward, and
    the loss is the soft-label BT loss (the one custom piece of preference training)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        r = rewards(model, inputs["input_ids"], inputs["attention_mask"])
        half = r.shape[0] // 2
        loss = bt_loss(r[:half], r[half:], inputs["hp"])
        return (loss, {"rewards": r}) if return_outputs else loss


@dataclass
class SoftPairCollator(DataCollatorForPreference):
    """TRL's pair collator (A then B, right-padded) carrying each pair's soft label ``hp``."""

    def torch_call(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        out = super().torch_call(examples)
        out["hp"] = torch.tensor([e["hp"] for e in examples], dtype=torch.float32)
        return out


def train_preference(model, tokenizer, pairs: Sequence[LabelledPair], *, epochs: float, lr: float,
                     batch_size: int, seed: int, **checkpointing) -> dict[str, float]:
    """Fine-tune ``model`` in place on labelled pairs; returns loss, steps, seconds."""
    if not pairs:
        raise ValueError("no labelled pairs to train the preference model on")
    prompts = [p[0] for p in pairs]
    rows = datasets.Dataset.from_dict({
        "chosen_ids": _encode(tokenizer, prompts, [p[1] for p in pairs]),
        "rejected_ids": _encode(tokenizer, prompts, [p[2] for p in pairs]),
        "hp": [float(p[3]) for p in pairs]})
    model.config.pad_token_id = tokenizer.pad_token_id
    return run_trainer(model, rows, SoftPairCollator(pad_token_id=tokenizer.pad_token_id),
                       trainer_cls=BradleyTerryTrainer, lr=lr, batch_size=batch_size, seed=seed,
                       epochs=epochs, **checkpointing)


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [torch.tensor(x) for x in seqs]
    return pad(ids, padding_value=pad_id), pad([torch.ones_like(x) for x in ids], padding_value=0)


@torch.no_grad()
def score(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
          batch_size: int = 1024) -> list[float]:
    """The reward of each (prompt, completion)."""
    model.eval()
    seqs = _encode(tokenizer, prompts, completions)
    out: list[float] = []
    for i in range(0, len(seqs), batch_size):
        ids, mask = _pad(seqs[i : i + batch_size], tokenizer.pad_token_id)
        out.extend(rewards(model, ids, mask).tolist())
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
