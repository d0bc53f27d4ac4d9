"""The preference (reward) model: a one-output sequence classifier trained with soft-label BT.

Loss for a pair (A, B) with soft label ``hp`` = P(A preferred):
``-hp * log s(r_A - r_B) - (1 - hp) * log s(r_B - r_A)``, i.e. binary cross-entropy of the
reward margin against ``hp``.

An **ensemble** (``preference.ensemble_heads`` K > 1) is one body with a K-output head: each
head is trained with the same loss on its own bootstrap of the pairs (every pair weighted
Poisson(1) per head, seeded by the run seed and the pair), so the heads agree where the data is
dense and disagree where it is thin. The reward is the heads' mean, the *spread* their standard
deviation. With K = 1 nothing of this runs: the model, batches and loss are the one-head ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer

from rs_pipeline import scoring
from rs_pipeline.ids import derive_seed
from rs_pipeline.likelihood_reward import is_likelihood, scored_positions
from rs_pipeline.pairs import LabelledPair
from rs_pipeline.preference_inputs import pad_rows
from rs_pipeline.scoring import head_rewards
from rs_pipeline.training import run_trainer


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, hp: torch.Tensor,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean soft-label Bradley-Terry loss; ``hp`` in [0, 1] is the probability A is preferred.

    With ``weights`` (pairs x heads, as ``r_a``/``r_b``), each head's per-pair loss is weighted
    (its bootstrap) and the sum is divided by pairs x heads (the weights' mean is 1)."""
    if weights is None:
        return F.binary_cross_entropy_with_logits(r_a - r_b, hp.to(r_a.dtype))
    target = hp.to(r_a.dtype).unsqueeze(-1).expand_as(r_a)
    per = F.binary_cross_entropy_with_logits(r_a - r_b, target, reduction="none")
    return (per * weights.to(per.dtype)).sum() / per.numel()


def bootstrap_weights(seed: int, pair: LabelledPair, heads: int) -> list[float]:
    """The pair's weight in each head's bootstrap: Poisson(1) draws seeded by (seed, pair)."""
    rng = np.random.default_rng(derive_seed(seed, "bootstrap", *pair[:3]))
    return rng.poisson(1.0, heads).astype(float).tolist()


def rewards(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One reward per row of a padded batch: the head's, or the mean over the heads."""
    logits = head_rewards(model, batch)
    return logits[:, 0] if logits.shape[1] == 1 else logits.mean(dim=1)


def preferred_nll(r: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A likelihood reward's negative log-likelihood of each pair's preferred completion, per
    token, weighted by how decided the label is: ``-(relu(2hp - 1) * r_A / len_A + relu(1 - 2hp)
    * r_B / len_B)``, averaged over the pairs (``r`` is the completion's summed log-likelihood;
    lengths count the tokens it sums over). A tie (hp = 0.5: both right or both wrong) teaches
    nothing, so two wrong answers are never learnt as if they were preferred."""
    scored = scored_positions(batch["token_type_ids"], batch["attention_mask"])
    per_token = r / scored.sum(dim=1).clamp(min=1).to(r.dtype)
    half, hp = r.shape[0] // 2, batch["hp"].to(r.dtype)
    return -(torch.relu(2 * hp - 1) * per_token[:half]
             + torch.relu(1 - 2 * hp) * per_token[half:]).mean()


class BradleyTerryTrainer(Trainer):
    """``Trainer`` whose batches are pairs: A and B go through the model in one forward, and
    the loss is the soft-label BT loss (the one custom piece of preference training); with
    per-head bootstrap ``weights`` in the batch, every head gets its own weighted loss. With
    ``nll_weight`` (a likelihood reward only), ``preferred_nll`` is added, times that weight."""

    def __init__(self, *args, nll_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.nll_weight = nll_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "weights" in inputs:
            r = head_rewards(model, inputs)
            half = r.shape[0] // 2
            loss = bt_loss(r[:half], r[half:], inputs["hp"], inputs["weights"])
        else:
            r = rewards(model, inputs)
            half = r.shape[0] // 2
            loss = bt_loss(r[:half], r[half:], inputs["hp"])
            if self.nll_weight:
                loss = loss + self.nll_weight * preferred_nll(r, inputs)
        return (loss, {"rewards": r}) if return_outputs else loss


@dataclass
class SoftPairCollator:
    """Pairs into one right-padded batch (every A, then every B) with each pair's soft label."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        out = pad_rows([e["a"] for e in examples] + [e["b"] for e in examples], self.pad_token_id)
        out["hp"] = torch.tensor([e["hp"] for e in examples], dtype=torch.float32)
        if "weights" in examples[0]:
            out["weights"] = torch.tensor([e["weights"] for e in examples], dtype=torch.float32)
        return out


def train_preference(model, tokenizer, pairs: Sequence[LabelledPair], *, epochs: float, lr: float,
                     batch_size: int, seed: int, nll_weight: float = 0.0,
                     **checkpointing) -> dict[str, float]:
    """Fine-tune ``model`` in place on labelled pairs; returns loss, steps, seconds. A model
    with K > 1 outputs trains each head on its own bootstrap of ``pairs`` (seeded by ``seed``);
    ``nll_weight`` > 0 (a likelihood reward) adds ``preferred_nll`` to the loss."""
    if nll_weight and not is_likelihood(model):
        raise ValueError("nll_weight needs a likelihood reward model (preference.reward)")
    if not pairs:
        raise ValueError("no labelled pairs to train the preference model on")
    prompts = [p[0] for p in pairs]
    columns = {
        "a": scoring.model_rows(model, tokenizer, prompts, [p[1] for p in pairs]),
        "b": scoring.model_rows(model, tokenizer, prompts, [p[2] for p in pairs]),
        "hp": [float(p[3]) for p in pairs]}
    heads = model.config.num_labels
    if heads > 1:
        columns["weights"] = [bootstrap_weights(seed, p, heads) for p in pairs]
    rows = datasets.Dataset.from_dict(columns)
    model.config.pad_token_id = tokenizer.pad_token_id
    return run_trainer(model, rows, SoftPairCollator(pad_token_id=tokenizer.pad_token_id),
                       trainer_cls=BradleyTerryTrainer, lr=lr, batch_size=batch_size, seed=seed,
                       epochs=epochs, trainer_kwargs={"nll_weight": nll_weight},
                       **checkpointing)


def score_heads(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                batch_size: int = 1024) -> torch.Tensor:
    """Every head's reward of each (prompt, completion): rows x heads. Each distinct row once,
    length-sorted batches, a shared prompt prefix on decoders: ``rs_pipeline.scoring``."""
    return scoring.score_heads(model, tokenizer, prompts, completions, batch_size)


def mean_and_spread(heads: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per row: the reward (the heads' mean; one head: its value) and the spread (the heads'
    standard deviation, ``torch.std``; 0.0 with one head)."""
    if heads.shape[1] == 1:
        return heads[:, 0].tolist(), [0.0] * heads.shape[0]
    return heads.mean(dim=1).tolist(), heads.std(dim=1).tolist()


def score(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
          batch_size: int = 1024) -> list[float]:
    """The reward of each (prompt, completion) (the heads' mean for an ensemble)."""
    return mean_and_spread(score_heads(model, tokenizer, prompts, completions, batch_size))[0]


def pair_accuracy(model, tokenizer, pairs: Sequence[LabelledPair]) -> float | None:
    """Share of decided pairs (hp != 0.5) whose reward order matches the label; None if none."""
    decided = [p for p in pairs if p[3] != 0.5]
    if not decided:
        return None
    prompts = [p[0] for p in decided]
    both = score(model, tokenizer, prompts + prompts,
                 [p[1] for p in decided] + [p[2] for p in decided])
    ra, rb = both[:len(decided)], both[len(decided):]
    return sum((a > b) == (p[3] > 0.5) for a, b, p in zip(ra, rb, decided)) / len(decided)
