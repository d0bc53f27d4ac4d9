"""A likelihood reward model: ``r(x, y) = sum_t log p(y_t | x, y_<t)`` under a causal LM that is
trained with the same soft-label Bradley-Terry loss as a classifier head (``preference.reward:
likelihood``).

Why: a reward head reads one pooled hidden state, so to judge ``49+97=641`` it must check every
digit at the last position; a causal LM already predicts each answer token from the prompt and
the tokens before it, so its log-likelihood decomposes over the answer and starts from what the
policy knows. Measured on addition (base policy of the demo preset, 6,000 seed pairs, on-policy
pairs of 256 held-out prompts x 8 samples): held-out pair accuracy 0.685 (head) vs 0.763
(likelihood), best-of-8 kept precision 0.385 vs 0.459; after one refresh on 2,000 on-policy
pairs 0.674 / 0.371 vs 0.777 / 0.469 (README "A likelihood reward model").

The model looks like a one-output sequence classifier to the rest of the package: called on a
padded batch it returns ``.logits`` of shape (rows, 1). Which tokens are the completion's comes
in ``token_type_ids`` (1 on the completion and its end token; ``preference_inputs.encode`` with
``segments=True``); the LM head runs only on the positions that predict them. Saved as the causal
LM's own folder with ``rs_reward: likelihood`` in its config, so ``modeling.load_preference``
knows it again.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

MARK = "rs_reward"
KIND = "likelihood"


class LikelihoodReward(torch.nn.Module):
    """A causal LM read as a reward model (module doc)."""

    _keys_to_ignore_on_save = None  # the trainer's resume reads it (a tied head reloads by tie)

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        lm.config.num_labels = 1  # one reward per row, as a one-output classifier
        setattr(lm.config, MARK, KIND)

    @property
    def config(self):
        return self.lm.config

    def forward(self, input_ids, attention_mask, token_type_ids, **_) -> SimpleNamespace:
        hidden = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask
                                    ).last_hidden_state
        scored = scored_positions(token_type_ids, attention_mask)
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][scored])
        targets = input_ids[:, 1:][scored]
        logp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None]
        per_row = torch.zeros(input_ids.shape[0], dtype=logp.dtype, device=logp.device)
        per_row = per_row.index_add(0, rows.expand_as(scored)[scored], logp)
        return SimpleNamespace(logits=per_row[:, None])

    def state_dict(self, *args, **kwargs):
        """Each tensor once: a tied LM head (GPT-2, small Llamas) is the embedding's tensor, kept
        under the embedding's name. What the trainer checkpoints (safetensors refuses shared
        tensors) and reloads with ``strict=False`` (the tie fills the head back in)."""
        seen, out = set(), {}
        for key, tensor in super().state_dict(*args, **kwargs).items():
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                out[key] = tensor
        return out

    def save_pretrained(self, folder, **kwargs) -> None:
        self.lm.save_pretrained(folder, **kwargs)


def scored_positions(token_type_ids, attention_mask):
    """Which next-token predictions (positions ``[:, 1:]``) the reward sums: the completion's
    tokens and its end token, not padding."""
    return token_type_ids[:, 1:].bool() & attention_mask[:, 1:].bool()


def is_likelihood(model) -> bool:
    return isinstance(model, LikelihoodReward)


def marked(config: dict) -> bool:
    """Whether a model folder's ``config.json`` (as a dict) is a likelihood reward model's."""
    return config.get(MARK) == KIND


def problems(preference, base_config) -> list[str]:
    """Settings a likelihood reward model cannot honour, refused before any model work;
    ``base_config`` is ``preference.base_path``'s config (None: the policy is the start)."""
    if preference.reward != KIND:
        return ([f"setting preference.nll_weight ({preference.nll_weight}) needs "
                 "preference.reward='likelihood' (a reward head has no likelihood to train)"]
                if preference.nll_weight else [])
    out = []
    if preference.ensemble_heads > 1:
        out.append(f"setting preference.reward='likelihood' has one output: "
                   f"preference.ensemble_heads must be 1, got {preference.ensemble_heads}")
    if preference.lora.enabled:
        out.append("setting preference.reward='likelihood' trains the whole causal LM: "
                   "preference.lora.enabled must be false")
    archs = (getattr(base_config, "architectures", None) or []) if base_config else []
    if base_config is not None and not any(a.endswith(("ForCausalLM", "LMHeadModel"))
                                           for a in archs):
        out.append(f"setting preference.reward='likelihood' needs a causal LM: "
                   f"preference.base_path is a {', '.join(archs) or 'model of no architecture'}")
    return out
