"""Direct preference optimisation on a round's ``dpo_pairs`` (TRL's ``DPOTrainer``).

The pairs are tokenized here, as SFT rows are (``training.encode_completions``): the prompt as
the policy is given it when sampling (``chat.render_prompts``: templated for a chat policy) and
each answer followed by the template's end-of-turn token (else EOS). TRL would otherwise append
the tokenizer's EOS (``<|endoftext|>``, not ``<|im_end|>``) to plain-text pairs, so its own
tokenization is bypassed (``_PretokenizedDPOTrainer``); its loss, reference log-probabilities and
collator are used as they are. The reference model is the policy as it is when training starts
(its log-probabilities are computed once, before the first step), so no second copy is kept.
The loop is ``training.run_trainer``: seeded, resumable from its checkpoints like SFT.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import datasets
import torch
from trl import DPOConfig, DPOTrainer

from rs_pipeline.chat import ChatMode, end_of_turn_id, render_prompts
from rs_pipeline.training import run_trainer


def encode_pairs(tokenizer, prompts: Sequence[str], chosen: Sequence[str],
                 rejected: Sequence[str], chat_template: ChatMode = "auto") -> list[dict]:
    """TRL's tokenized pair rows (``prompt_ids``/``chosen_ids``/``rejected_ids``): the same
    prompt and answer tokens an SFT row of the same texts trains on."""
    p_ids = render_prompts(tokenizer, prompts, chat_template)
    eos = end_of_turn_id(tokenizer, chat_template)
    c_ids = tokenizer(list(chosen), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(list(rejected), add_special_tokens=False)["input_ids"]
    return [{"prompt_ids": p, "chosen_ids": c + [eos], "rejected_ids": r + [eos]}
            for p, c, r in zip(p_ids, c_ids, r_ids)]


class _PretokenizedDPOTrainer(DPOTrainer):
    """``DPOTrainer`` on rows that ``encode_pairs`` already tokenized."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


def train_on_pairs(model, tokenizer, prompts: Sequence[str], chosen: Sequence[str],
                   rejected: Sequence[str], *, beta: float, lr: float, batch_size: int, seed: int,
                   epochs: float, checkpoint_dir: Path | None = None, checkpoint_steps: int = 0,
                   chat_template: ChatMode = "auto") -> dict[str, float]:
    """DPO on (prompt, chosen, rejected) rows, ``model`` trained in place against itself as it
    is now (the reference); returns loss, steps, seconds and TRL's last ``rewards/*`` logs."""
    if not prompts:
        raise ValueError("nothing to train on: there are no DPO pairs")
    rows = datasets.Dataset.from_list(encode_pairs(tokenizer, prompts, chosen, rejected,
                                                   chat_template))
    return run_trainer(
        model, rows, None, trainer_cls=_PretokenizedDPOTrainer, args_cls=DPOConfig,
        trainer_kwargs={"processing_class": tokenizer}, lr=lr, batch_size=batch_size, seed=seed,
        epochs=epochs, beta=beta, precompute_ref_log_probs=True, max_length=None,
        checkpoint_dir=checkpoint_dir, checkpoint_steps=checkpoint_steps)


@torch.no_grad()
def pair_logps(model, tokenizer, prompts: Sequence[str], chosen: Sequence[str],
               rejected: Sequence[str], chat_template: ChatMode = "auto"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of each chosen and rejected answer (with its end token) given
    its prompt, as DPO scores them."""
    rows = encode_pairs(tokenizer, prompts, chosen, rejected, chat_template)
    model.eval()
    out = []
    for side in ("chosen_ids", "rejected_ids"):
        logps = []
        for r in rows:
            ids = torch.tensor([r["prompt_ids"] + r[side]])
            logits = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            targets = ids[0, 1:]
            token = logits.gather(1, targets[:, None])[:, 0]
            logps.append(token[len(r["prompt_ids"]) - 1:].sum())
        out.append(torch.stack(logps))
    return out[0], out[1]
