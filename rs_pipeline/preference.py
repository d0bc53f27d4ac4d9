"""The preference (reward) model: a one-output sequence classifier trained with soft-label BT.

Loss for a pair (A, B) with soft label ``hp`` = P(A preferred):
``-hp * log s(r_A - r_B) - (1 - hp) * log s(r_B - r_A)``, i.e. binary cross-entropy of the
reward margin against ``hp``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import Trainer

from rs_pipeline.training import ListDataset, run_trainer, training_args

LabelledPair = tuple[str, str, str, float]  # (prompt, completion_a, completion_b, hp)


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, hp: torch.Tensor) -> torch.Tensor:
    """Mean soft-label Bradley-Terry loss; ``hp`` in [0, 1] is the probability A is preferred."""
    return F.binary_cross_entropy_with_logits(r_a - r_b, hp.to(r_a.dtype))


def _encode(tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> list[list[int]]:
    p = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    c = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    return [a + b + [tokenizer.eos_token_id] for a, b in zip(p, c)]


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]


class BradleyTerryTrainer(Trainer):
    """``Trainer`` whose batches are pairs: A and B go through the model in one forward."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        r = rewards(model, inputs["input_ids"], inputs["attention_mask"])
        half = r.shape[0] // 2
        loss = bt_loss(r[:half], r[half:], inputs["hp"])
        return (loss, {"rewards": r}) if return_outputs else loss


def _pair_collator(tokenizer):
    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        seqs = [r["a"] for r in rows] + [r["b"] for r in rows]
        ids, mask = _pad(seqs, tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask,
                "hp": torch.tensor([r["hp"] for r in rows], dtype=torch.float32)}
    return collate


def train_preference(model, tokenizer, pairs: Sequence[LabelledPair], *, epochs: float, lr: float,
                     batch_size: int, seed: int) -> dict[str, float]:
    """Fine-tune ``model`` in place on labelled pairs; returns loss, steps, seconds."""
    if not pairs:
        raise ValueError("no labelled pairs to train the preference model on")
    prompts = [p[0] for p in pairs]
    enc_a = _encode(tokenizer, prompts, [p[1] for p in pairs])
    enc_b = _encode(tokenizer, prompts, [p[2] for p in pairs])
    rows = [{"a": a, "b": b, "hp": float(p[3])} for a, b, p in zip(enc_a, enc_b, pairs)]
    model.config.pad_token_id = tokenizer.pad_token_id
    model.train()
    trainer = BradleyTerryTrainer(
        model=model,
        args=training_args(lr=lr, batch_size=batch_size, seed=seed, epochs=epochs),
        train_dataset=ListDataset(rows),
        data_collator=_pair_collator(tokenizer),
    )
    metrics = run_trainer(trainer)
    model.eval()
    return metrics


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
