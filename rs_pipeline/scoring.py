"""Scoring many (prompt, completion) rows with a preference model at the least cost.

Three savings, each giving the same rewards as scoring every row on its own (up to float noise,
measured ~1e-6 in fp32, tested at 1e-5):

- **Once per model**: rows are keyed by content (prompt, completion); each distinct one is
  scored once per call, and with a ``model_id`` (the checkpoint record's id) once per process:
  a small in-memory cache keyed by (model id, prompt, completion) serves any later call with the
  same model (the in-process executor runs a round's steps in one process). Pass a model id
  only for a saved checkpoint that is not being trained.
- **Length-sorted batches**: rows are sorted by token length before batching (order restored
  after), so a batch pads to a near neighbour's length, not to the longest row of 1,024.
- **Shared prompt prefix** on decoders (GPT-2, Llama, the demo model: last-token pooling): a
  prompt's key/values are computed once and expanded over its completions, which then run
  alone on that cache. Encoders (CLS pooling: MiniLM, BERT) read prompt and completion together
  and keep the sorted plain path.

``ENABLED = False`` switches all three off (today's plain path: 1,024-row batches in the given
order); ``benchmarks/round_steps.py --before`` uses it. ``STATS`` counts rows asked for,
distinct, served from the cache, scored, and tokens computed and padded.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence

import torch
from transformers import DynamicCache

from rs_pipeline.preference_inputs import context_length, encode, pad_rows, reads_text_pairs

__all__ = ["ENABLED", "STATS", "clear_cache", "encode", "plain_heads", "reset_stats", "score_heads"]

#: Switch for the benchmark's "before" side: False scores every row as today's plain path.
ENABLED = True
#: Counters since the last ``reset_stats()``.
STATS: Counter = Counter()
_MODELS_KEPT = 4  # cache the scores of the last few model ids only
_CACHE: OrderedDict[str, dict[tuple[str, str], torch.Tensor]] = OrderedDict()
#: With ``ENABLED = False``: every (model id, prompt, completion) scored, to count repeats.
_SEEN: set = set()


def reset_stats() -> None:
    STATS.clear()


def clear_cache() -> None:
    _CACHE.clear()
    _SEEN.clear()


def _forward(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return model(**{k: batch[k] for k in keys if k in batch}).logits


def plain_heads(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                batch_size: int = 1024) -> torch.Tensor:
    """Today's path: every row, batches in the given order, each padded to its longest row."""
    rows = encode(tokenizer, prompts, completions, context_length(model.config, tokenizer))
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        _count_plain(chunk)
        out.append(_forward(model, pad_rows(chunk, tokenizer.pad_token_id)))
    STATS["requested"] += len(rows)
    STATS["scored"] += len(rows)
    return torch.cat(out) if out else torch.zeros(0, model.config.num_labels)


def _count_plain(chunk: Sequence[dict]) -> None:
    longest = max(len(r["input_ids"]) for r in chunk)
    STATS["tokens_real"] += sum(len(r["input_ids"]) for r in chunk)
    STATS["tokens_computed"] += longest * len(chunk)


@torch.no_grad()
def score_heads(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                batch_size: int = 1024, model_id: str | None = None,
                shared_prefix: bool = True) -> torch.Tensor:
    """Every head's reward of each (prompt, completion): rows x heads (see the module doc)."""
    model.eval()
    if not ENABLED:
        # the plain path, counting rows this model scored before ("repeats"; in-call repeats
        # too when the model has no id)
        owner = model_id or object()
        keys = [(owner, p, c) for p, c in zip(prompts, completions)]
        for k in keys:
            STATS["repeats"] += k in _SEEN
            _SEEN.add(k)
        return plain_heads(model, tokenizer, prompts, completions, batch_size)
    keys = list(zip(prompts, completions))
    cache = _CACHE.setdefault(model_id, {}) if model_id else {}
    if model_id:
        _CACHE.move_to_end(model_id)
        while len(_CACHE) > _MODELS_KEPT:
            _CACHE.popitem(last=False)
    distinct = list(dict.fromkeys(keys))
    todo = [k for k in distinct if k not in cache]
    STATS["requested"] += len(keys)
    STATS["distinct"] += len(distinct)
    STATS["cache_hits"] += len(distinct) - len(todo)
    STATS["scored"] += len(todo)
    if todo:
        rows = encode(tokenizer, [k[0] for k in todo], [k[1] for k in todo],
                      context_length(model.config, tokenizer))
        if shared_prefix and _shares_prefix(model, tokenizer):
            heads = _prefix_heads(model, tokenizer, [k[0] for k in todo], rows, batch_size)
        else:
            heads = _sorted_heads(model, tokenizer, rows, batch_size)
        cache.update(zip(todo, heads))
    if not keys:
        return torch.zeros(0, model.config.num_labels)
    return torch.stack([cache[k] for k in keys])


def _sorted_heads(model, tokenizer, rows: list[dict], batch_size: int) -> list[torch.Tensor]:
    """Rows scored in batches of similar length; results in the rows' order."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    out: list = [None] * len(rows)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        chunk = [rows[i] for i in idx]
        _count_plain(chunk)
        for i, r in zip(idx, _forward(model, pad_rows(chunk, tokenizer.pad_token_id))):
            out[i] = r
    return out


def _shares_prefix(model, tokenizer) -> bool:
    """Decoders with last-token pooling and a ``score`` head read a prompt prefix then the
    completion; encoders (text pairs, CLS pooling) do not."""
    return (not reads_text_pairs(tokenizer) and hasattr(model, "score")
            and not model.config.is_encoder_decoder and tokenizer.pad_token_id is not None)


def _prefix_heads(model, tokenizer, prompts: list[str], rows: list[dict],
                  batch_size: int) -> list[torch.Tensor]:
    """Each distinct prompt prefix (as ``encode`` writes it) through the body once; its rows'
    remaining tokens then run on that prompt's cache. The pooled token is the rightmost non-pad
    one, as the sequence classifier picks it; rows whose pooled token lies in the prefix (or
    with nothing after it) take the sorted plain path."""
    pad = tokenizer.pad_token_id
    heads = tokenizer(list(dict.fromkeys(prompts)))["input_ids"]
    prefix_of = dict(zip(dict.fromkeys(prompts), heads))
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
                _run_chunk(model, pad, chunk, groups, rows, length, batch_size, out)
                chunk, n = [], 0
        if chunk:
            _run_chunk(model, pad, chunk, groups, rows, length, batch_size, out)
    return out


def _run_chunk(model, pad: int, prefixes: list[tuple], groups: dict, rows: list[dict],
               length: int, batch_size: int, out: list) -> None:
    body = model.base_model
    prefix = torch.tensor(prefixes)
    cache = body(input_ids=prefix, use_cache=True).past_key_values
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
        hidden = body(input_ids=ids, attention_mask=mask, past_key_values=expanded,
                      position_ids=torch.arange(length, length + width).expand(len(part), -1),
                      use_cache=True).last_hidden_state
        pooled = model.score(hidden[torch.arange(len(part)), torch.tensor(last)])
        for (_, i), r in zip(part, pooled):
            out[i] = r


def _select(cache: DynamicCache, index: torch.Tensor) -> DynamicCache:
    """A new cache holding rows ``index`` of ``cache`` (the prompt's KV once per completion)."""
    new = DynamicCache()
    for layer_idx, layer in enumerate(cache.layers):
        new.update(layer.keys.index_select(0, index), layer.values.index_select(0, index),
                   layer_idx)
    return new
