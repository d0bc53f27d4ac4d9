"""Sampling N completions per prompt: prefill the prompt once, expand its KV cache N times.

``generate(num_return_sequences=N)`` runs the prompt through the model N times and decodes into
a cache that grows by concatenation; this engine runs the prompt once, repeats its keys/values N
times into a preallocated ``StaticCache`` and decodes in place, which pays off as prompts grow
(``benchmarks/generation.py`` measures it).

Randomness is counter-based: sample ``i`` of a prompt draws Gumbel noise from a hash of its own
seed, the step and the token id, so a row depends only on its seed and the weights, never on
batch size or order. Temperature 0 is greedy decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import StaticCache

_MASK31 = 0x7FFFFFFF


@dataclass(frozen=True)
class SamplingParams:
    n: int = 8
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 16

    def as_dict(self) -> dict:
        return {"n": self.n, "temperature": self.temperature, "top_k": self.top_k,
                "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}


def _mix31(x: torch.Tensor) -> torch.Tensor:
    """An integer hash on int64 tensors holding 31-bit values (no overflow: constants < 2^27)."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK31
    return ((x >> 16) ^ x) & _MASK31


def seed_states(seeds: torch.Tensor) -> torch.Tensor:
    """Per-row hash state of the seeds (computed once per sampling call)."""
    return _mix31(seeds.to(torch.long) & _MASK31)[:, None]


def gumbel_noise(seeds: torch.Tensor, step: int, vocab: int,
                 states: torch.Tensor | None = None) -> torch.Tensor:
    """Gumbel(0, 1) noise of shape [rows, vocab], a pure function of (seed, step, token id)."""
    base = seed_states(seeds) if states is None else states
    counter = step * vocab + torch.arange(vocab, dtype=torch.long)[None, :]
    x = _mix31(_mix31((base + counter) & _MASK31) ^ base)
    u = ((x >> 7).to(torch.float32) + 0.5) * (1.0 / (1 << 24))  # 24 bits: exact in float32
    return -torch.log(-torch.log(u))


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the first over top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def pick_tokens(logits: torch.Tensor, seeds: torch.Tensor, step: int, params: SamplingParams,
                states: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy at temperature 0, else a Gumbel-max draw from the filtered softmax."""
    if params.temperature <= 0:
        return logits.argmax(-1)
    logits = _filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    return (logits + gumbel_noise(seeds, step, logits.shape[-1], states)).argmax(-1)


def expanded_static_cache(model, prefilled, n: int, max_len: int) -> StaticCache:
    """The prompt's cache repeated ``n`` times into a preallocated cache of ``max_len`` slots.

    Decoding then writes each new key/value in place; a growing cache would copy itself at
    every step (``torch.cat``), which dominates decoding once prompts are long.
    """
    cache = StaticCache(config=model.config, max_cache_len=max_len)
    for i, layer in enumerate(prefilled.layers):
        cache.update(layer.keys.repeat_interleave(n, 0), layer.values.repeat_interleave(n, 0), i)
    return cache


@torch.inference_mode()
def sample_expanded(model, prompt_ids: torch.Tensor, seeds: torch.Tensor, params: SamplingParams,
                    eos_id: int, pad_id: int) -> torch.Tensor:
    """Sample ``params.n`` continuations of each row of ``prompt_ids`` (equal-length prompts).

    ``seeds`` holds one seed per output row (``len(prompt_ids) * n``, prompt-major). Returns new
    tokens [rows, <= max_new_tokens], padded with ``pad_id`` after each row's EOS.
    """
    n = params.n
    out = model(input_ids=prompt_ids, use_cache=True)
    cache = expanded_static_cache(model, out.cache, n, prompt_ids.shape[1] + params.max_new_tokens)
    logits = out.logits[:, -1, :].repeat_interleave(n, dim=0)
    finished = torch.zeros(logits.shape[0], dtype=torch.bool)
    states = seed_states(seeds)
    steps = []
    for step in range(params.max_new_tokens):
        tok = pick_tokens(logits, seeds, step, params, states)
        tok = tok.masked_fill(finished, pad_id)
        steps.append(tok)
        finished |= tok == eos_id
        if bool(finished.all()) or step + 1 == params.max_new_tokens:
            break
        out = model(input_ids=tok[:, None], cache=cache, use_cache=True)
        logits = out.logits[:, -1, :]
    return torch.stack(steps, dim=1)


def decode_completion(tokenizer, ids: Sequence[int], eos_id: int) -> tuple[str, int, bool]:
    """Text up to (not including) EOS, its token count, and whether EOS was reached."""
    ids = list(ids)
    ended = eos_id in ids
    if ended:
        ids = ids[: ids.index(eos_id)]
    return tokenizer.decode(ids, skip_special_tokens=True), len(ids), ended


def sample_prompts(model, tokenizer, prompts: Sequence[str], params: SamplingParams,
                   seed_of: Callable[[int, int], int], batch_prompts: int = 256) -> dict:
    """Sample ``params.n`` completions for every prompt.

    ``seed_of(prompt_index, sample_index)`` gives each sample's seed. Prompts are grouped by
    token length so no padding enters the prompt. Returns columns (lists) ``prompt_index``,
    ``sample_index``, ``completion``, ``num_tokens``, ``finished``, ``seed`` and the throughput.
    """
    model.eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    cols: dict[str, list] = {k: [] for k in
                             ("prompt_index", "sample_index", "completion", "num_tokens",
                              "finished", "seed")}
    new_tokens, start = 0, time.perf_counter()
    i = 0
    while i < len(order):
        length = len(encoded[order[i]])
        chunk = [order[i]]
        i += 1
        while i < len(order) and len(chunk) < batch_prompts and len(encoded[order[i]]) == length:
            chunk.append(order[i])
            i += 1
        seeds = [seed_of(p, s) for p in chunk for s in range(params.n)]
        ids = torch.tensor([encoded[p] for p in chunk], dtype=torch.long)
        toks = sample_expanded(model, ids, torch.tensor(seeds), params, eos, pad).tolist()
        for r, row in enumerate(toks):
            text, ntok, ended = decode_completion(tokenizer, row, eos)
            new_tokens += ntok + int(ended)
            for k, v in zip(cols, (chunk[r // params.n], r % params.n, text, ntok, ended,
                                   seeds[r])):
                cols[k].append(v)
    seconds = time.perf_counter() - start
    back = sorted(range(len(cols["seed"])),
                  key=lambda j: (cols["prompt_index"][j], cols["sample_index"][j]))
    result = {k: [v[j] for j in back] for k, v in cols.items()}
    result["tokens_per_s"] = new_tokens / seconds if seconds > 0 else 0.0
    result["seconds"] = seconds
    return result
