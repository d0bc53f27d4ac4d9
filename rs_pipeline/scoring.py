"""Scoring many (prompt, completion) rows with a preference model at the least cost.

Three savings, each giving the rewards of scoring every row on its own (up to float noise,
measured ~1e-7 in fp32, tested at 1e-5):

- **Each distinct row once**: rows are keyed by content (prompt, completion); a policy that has
  converged samples the same completion many times, and each is scored once per call.
- **Length-sorted batches**: rows are sorted by token length before batching (order restored
  after), so a batch pads to a near neighbour's length, not to the longest of 1,024 rows.
- **Shared prompt prefix** on decoders (GPT-2, Llama, the demo model: last-token pooling): a
  prompt's key/values are computed once and expanded over its completions, which then run
  alone on that cache. Encoders (CLS pooling: MiniLM, BERT) read prompt and completion together
  and keep the sorted path.

Reproducible: the batches are a function of the *set* of the call's rows only (not their order;
no cache across calls), so a step re-run after a crash scores bit for bit as the first run did,
and a pair scored as (a, b) or (b, a) gets the same two rewards. LoRA
(peft) preference models share the prefix through their wrapped body and head.

``ENABLED = False`` switches all three off (the plain path: 1,024-row batches in the given
order); ``benchmarks/round_steps.py`` uses it for its "before" side. ``STATS`` counts rows asked
for, distinct, scored, and tokens computed (padding included) and real.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from transformers import DynamicCache

from rs_pipeline.likelihood_reward import is_likelihood
from rs_pipeline.preference_inputs import context_length, encode, pad_rows, reads_text_pairs

__all__ = ["ENABLED", "STATS", "head_rewards", "model_rows", "plain_heads", "reset_stats",
           "score_heads"]

#: Switch for the benchmark's "before" side: False scores every row as the plain path.
ENABLED = True
#: Counters since the last ``reset_stats()``.
STATS: Counter = Counter()


def reset_stats() -> None:
    STATS.clear()


def head_rewards(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every head's reward per row of a padded batch (``input_ids``, ``attention_mask``,
    segment ids): rows x heads."""
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return model(**{k: batch[k] for k in keys if k in batch}).logits


def model_rows(model, tokenizer, prompts: Sequence[str],
               completions: Sequence[str]) -> list[dict]:
    """The rows ``model`` reads (``preference_inputs.encode``: within its context, with the
    completion marked for a likelihood reward)."""
    return encode(tokenizer, prompts, completions, context_length(model.config, tokenizer),
                  segments=is_likelihood(model))


def _empty(model) -> torch.Tensor:
    return torch.zeros(0, model.config.num_labels)


@torch.no_grad()
def plain_heads(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                batch_size: int = 1024) -> torch.Tensor:
    """Every row, batches in the given order, each padded to its longest row."""
    model.eval()
    rows = model_rows(model, tokenizer, prompts, completions)
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        _count(chunk)
        out.append(head_rewards(model, pad_rows(chunk, tokenizer.pad_token_id)))
    STATS["requested"] += len(rows)
    STATS["distinct"] += len(set(zip(prompts, completions)))
    STATS["scored"] += len(rows)
    return torch.cat(out) if out else _empty(model)


def _count(chunk: Sequence[dict]) -> None:
    longest = max(len(r["input_ids"]) for r in chunk)
    STATS["tokens_real"] += sum(len(r["input_ids"]) for r in chunk)
    STATS["tokens_computed"] += longest * len(chunk)


@torch.no_grad()
def score_heads(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                batch_size: int = 1024, shared_prefix: bool = True) -> torch.Tensor:
    """Every head's reward of each (prompt, completion): rows x heads (see the module doc)."""
    if not ENABLED:
        return plain_heads(model, tokenizer, prompts, completions, batch_size)
    model.eval()
    keys = list(zip(prompts, completions))
    distinct = sorted(set(keys))  # the batches depend on the set of rows, not their order
    STATS["requested"] += len(keys)
    STATS["distinct"] += len(distinct)
    STATS["scored"] += len(distinct)
    if not keys:
        return _empty(model)
    todo_p, todo_c = [k[0] for k in distinct], [k[1] for k in distinct]
    rows = model_rows(model, tokenizer, todo_p, todo_c)
    parts = _parts(model)
    if shared_prefix and parts and _reads_prefix_first(tokenizer):
        heads = _prefix_heads(model, parts, tokenizer, todo_p, rows, batch_size)
    else:
        heads = _sorted_heads(model, tokenizer, rows, batch_size)
    found = dict(zip(distinct, heads))
    return torch.stack([found[k] for k in keys])


def _sorted_heads(model, tokenizer, rows: list[dict], batch_size: int) -> list[torch.Tensor]:
    """Rows scored in batches of similar length; results in the rows' order."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    out: list = [None] * len(rows)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        chunk = [rows[i] for i in idx]
        _count(chunk)
        for i, r in zip(idx, head_rewards(model, pad_rows(chunk, tokenizer.pad_token_id))):
            out[i] = r
    return out


def _parts(model):
    """(body, head) of a decoder sequence classifier with last-token pooling and a ``score``
    head (a peft model: of the model it wraps, LoRA layers in place); None for anything else."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(inner, "base_model_prefix", "")
    body, head = getattr(inner, prefix, None), getattr(inner, "score", None)
    if body is None or head is None or inner.config.is_encoder_decoder:
        return None
    return body, head


def _reads_prefix_first(tokenizer) -> bool:
    """Decoders read the prompt's tokens then the completion's; text-pair encoders do not."""
    return not reads_text_pairs(tokenizer) and tokenizer.pad_token_id is not None


def _prefix_heads(model, parts, tokenizer, prompts: list[str], rows: list[dict],
                  batch_size: int) -> list[torch.Tensor]:
    """Each distinct prompt prefix (as ``encode`` writes it) through the body once; its rows'
    remaining tokens then run on that prompt's cache. The pooled token is the rightmost non-pad
    one, as the sequence classifier picks it; rows whose pooled token lies in the prefix (or
    with nothing after it) take the sorted path."""
    pad = tokenizer.pad_token_id
    unique = list(dict.fromkeys(prompts))
    prefix_of = dict(zip(unique, tokenizer(unique)["input_ids"]))
    groups: dict[tuple, list[int]] = {}
    plain: list[int] = []
    for i, (p, r) in enumerate(zip(prompts, rows)):
        h = prefix_of[p]
        tail = r["input_ids"][len(h):]
        if r["input_ids"][:len(h)] == h and any(t != pad for t in tail):
            groups.setdefault(tuple(h), []).append(i)
        else:
            plain.append(i)
    out: list = [None] * len(rows)
    for i, r in zip(plain, _sorted_heads(model, tokenizer, [rows[i] for i in plain], batch_size)):
        out[i] = r
    by_length: dict[int, list[tuple]] = {}
    for h in groups:
        by_length.setdefault(len(h), []).append(h)
    for length, prefixes in by_length.items():
        chunk: list[tuple] = []
        n = 0
        for h in prefixes:
            chunk.append(h)
            n += len(groups[h])
            if n >= batch_size:
                _run_chunk(parts, pad, chunk, groups, rows, length, batch_size, out)
                chunk, n = [], 0
        if chunk:
            _run_chunk(parts, pad, chunk, groups, rows, length, batch_size, out)
    return out


def _run_chunk(parts, pad: int, prefixes: list[tuple], groups: dict, rows: list[dict],
               length: int, batch_size: int, out: list) -> None:
    body, head = parts
    prefix = torch.tensor(prefixes)
    cache = body(input_ids=prefix, use_cache=True).cache
    STATS["tokens_real"] += prefix.numel()
    STATS["tokens_computed"] += prefix.numel()
    members = [(j, i) for j, h in enumerate(prefixes) for i in groups[h]]
    members.sort(key=lambda m: len(rows[m[1]]["input_ids"]))
    for s in range(0, len(members), batch_size):
        part = members[s: s + batch_size]
        tails = [rows[i]["input_ids"][length:] for _, i in part]
        width = max(len(t) for t in tails)
        ids = torch.full((len(part), width), pad, dtype=torch.long)
        mask = torch.zeros((len(part), length + width), dtype=torch.long)
        mask[:, :length] = 1
        last = []
        for k, t in enumerate(tails):
            ids[k, :len(t)] = torch.tensor(t)
            mask[k, length: length + len(t)] = 1
            last.append(max(p for p, tok in enumerate(t) if tok != pad))
        STATS["tokens_real"] += sum(len(t) for t in tails)
        STATS["tokens_computed"] += ids.numel()
        expanded = _select(cache, torch.tensor([j for j, _ in part]))
        hidden = body(input_ids=ids, attention_mask=mask, cache=expanded,
                      position_ids=torch.arange(length, length + width).expand(len(part), -1),
                      use_cache=True).last_hidden_state
        pooled = head(hidden[torch.arange(len(part)), torch.tensor(last)])
        for (_, i), r in zip(part, pooled):
            out[i] = r


def _select(cache: DynamicCache, index: torch.Tensor) -> DynamicCache:
    """A new cache holding rows ``index`` of ``cache`` (the prompt's KV once per completion)."""
    new = DynamicCache()
    for layer_idx, layer in enumerate(cache.layers):
        new.update(layer.keys.index_select(0, index), layer.values.index_select(0, index),
                   layer_idx)
    return new
