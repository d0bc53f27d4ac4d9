"""How the preference model reads a (prompt, completion): with its own tokenizer's conventions.

Models are exchanged as text, so the reward model turns each pair of strings into ids itself:

- **Encoders** whose tokenizer has a text-pair template (BERT, MiniLM, RoBERTa, ...: it defines
  CLS and SEP tokens) read ``tokenizer(prompt, completion)``: ``[CLS] prompt [SEP] completion
  [SEP]`` with segment ids; the sequence classifier pools the first token.
- **Decoders** (GPT-2, Llama, the demo model) read the prompt as the tokenizer encodes it (its own
  BOS, if it adds one), then the completion, then EOS when the tokenizer has an EOS distinct from
  its pad token. The classifier pools the last non-pad token, so rows are padded on the right;
  a decoder without a pad token pads with EOS (``modeling.load_preference``) and then ends on
  the completion's last token, the last real token.

Length: a row longer than the model's context is **truncated explicitly**: the completion loses
its tail; the prompt and the special tokens are kept. A prompt that does not fit with its
special tokens is an error (preflight refuses it before any model work).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from rs_pipeline.errors import InputError

log = logging.getLogger(__name__)
_HUGE = 10**9  # tokenizers without a limit report a sentinel near 1e30


def reads_text_pairs(tokenizer) -> bool:
    """True for encoders with their own (prompt, completion) template (CLS ... SEP ... SEP)."""
    return tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None


def context_length(config, tokenizer) -> int | None:
    """The longest row the model reads: its position table, capped by the tokenizer's limit."""
    limits = [getattr(config, k) for k in ("max_position_embeddings", "n_positions", "max_seq_len")
              if getattr(config, k, None)][:1]
    if 0 < (getattr(tokenizer, "model_max_length", None) or _HUGE) < _HUGE:
        limits.append(tokenizer.model_max_length)
    return min(limits) if limits else None


def encode(tokenizer, prompts: Sequence[str], completions: Sequence[str],
           max_length: int | None = None, segments: bool = False) -> list[dict[str, list[int]]]:
    """Each (prompt, completion) as the preference model reads it: ``input_ids`` (and
    ``token_type_ids`` for text-pair encoders), completions truncated to ``max_length``. With
    ``segments`` (a decoder read as a likelihood reward), ``token_type_ids`` mark the
    completion and its end token with 1, the prompt with 0."""
    prompts, completions = list(prompts), list(completions)
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    if reads_text_pairs(tokenizer):
        special = tokenizer.num_special_tokens_to_add(pair=True)
        _check_prompts(p_ids, special, max_length)
        enc = tokenizer(prompts, completions, truncation="only_second" if max_length else False,
                        max_length=max_length)
        rows = [{"input_ids": i, "token_type_ids": t}
                for i, t in zip(enc["input_ids"], enc["token_type_ids"])]
    else:
        eos, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        # a likelihood reward scores the end too (its rows' lengths, not the pad id, mark them)
        tail = [eos] if eos is not None and (eos != pad_id or segments) else []
        heads = tokenizer(prompts)["input_ids"]  # with the tokenizer's own BOS, if any
        special = len(tail) + max((len(h) - len(p) for h, p in zip(heads, p_ids)), default=0)
        _check_prompts(p_ids, special, max_length)
        room = [_HUGE if max_length is None else max_length - len(h) - len(tail) for h in heads]
        rows = [{"input_ids": h + c[:r] + tail} for h, c, r in zip(heads, c_ids, room)]
        if segments:
            for row, h in zip(rows, heads):
                row["token_type_ids"] = [0] * len(h) + [1] * (len(row["input_ids"]) - len(h))
    cut = sum(len(p) + len(c) + special > max_length for p, c in zip(p_ids, c_ids)) \
        if max_length else 0
    if cut:
        log.warning("%d of %d completions were truncated to the preference model's context of "
                    "%d tokens", cut, len(rows), max_length)
    return rows


def _check_prompts(p_ids: list[list[int]], special: int, max_length: int | None) -> None:
    if max_length is None:
        return
    for i, p in enumerate(p_ids):
        if len(p) + special >= max_length:
            raise InputError(f"prompt at row {i}: {len(p)} tokens plus {special} special ones leave "
                             f"no room for a completion in the preference model's context of "
                             f"{max_length}")


def pad_rows(rows: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` (with ``pad_id``), ``attention_mask`` and, when the rows have
    them, ``token_type_ids`` (with 0)."""
    ids = [torch.tensor(r["input_ids"]) for r in rows]
    out = {"input_ids": _right(ids, pad_id), "attention_mask": _right(
        [torch.ones_like(x) for x in ids], 0)}
    if "token_type_ids" in rows[0]:
        out["token_type_ids"] = _right([torch.tensor(r["token_type_ids"]) for r in rows], 0)
    return out


def _right(seqs: list[torch.Tensor], value: int) -> torch.Tensor:
    return pad_sequence(seqs, batch_first=True, padding_value=value)
