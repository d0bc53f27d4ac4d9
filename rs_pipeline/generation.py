"""Sampling N completions per prompt: prefill the prompt once, decode N rows against one copy of it.

``generate(num_return_sequences=N)`` runs the prompt through the model N times and decodes into
a cache that grows by concatenation. This engine runs the prompt once (logits at its last
position only) and, for GPT-2, decodes with the prompt's keys/values kept once per prompt: the
N samples of a prompt attend to that shared copy plus their own preallocated, never-zeroed
buffer of new keys/values, so a decode step reads the prompt's cache once per prompt instead of
N times. The logits are computed over 512-token slices of the vocabulary (the same numbers as
``lm_head(h)``, ~1.5x faster at a 50k vocabulary). Other architectures repeat the prompt's
cache N times into a ``StaticCache``.
``benchmarks/generation.py`` measures both against ``generate``.

Randomness is counter-based: sample ``i`` of a prompt draws one uniform per step from a hash of
its own seed and the step (``uniform_noise``) and turns it into a token by inverting the CDF of
the (top-k/top-p filtered) softmax, so a row depends only on its seed and the weights, never on
batch size or order. Temperature 0 is greedy decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import GPT2LMHeadModel, StaticCache

_MASK31 = 0x7FFFFFFF
_CDF_BLOCK = 256  # vocabulary entries per block of the two-level inverse CDF (_inverse_cdf)
_NUCLEUS_CANDIDATES = 1024  # most likely tokens tried first for top_p (see _nucleus)
_HEAD_SLICE = 512  # vocabulary columns per product in the GPT-2 logits (see _gpt2_logits)


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


def _mix31(x):
    """An integer hash of 31-bit values (int64 tensors or Python ints; constants < 2^27, so
    nothing overflows)."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK31
    return ((x >> 16) ^ x) & _MASK31


def uniform_noise(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform draw in [0, 1) per seed (float64, 53 random bits), a pure function of
    (seed, step): two 31-bit hashes of the seed under the counters ``2*step`` and ``2*step+1``."""
    s = seeds.to(torch.long)
    base = _mix31(_mix31(s & _MASK31) ^ ((s >> 31) & _MASK31))
    hi, lo = (_mix31(_mix31(base ^ _mix31((2 * step + j) & _MASK31)) ^ base) for j in (0, 1))
    return ((hi << 22) | (lo >> 9)).to(torch.float64) * 2.0 ** -53


def _first_above(cdf: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per row, the first index whose running sum ``cdf`` exceeds ``x`` [rows, 1], never past
    the last index that adds weight (``x`` may round up to the total)."""
    idx = torch.searchsorted(cdf, x, right=True)
    return torch.minimum(idx, torch.searchsorted(cdf, cdf[:, -1:].contiguous()))


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index drawn from each row of non-negative ``weights`` with probability proportional to
    its weight: the first index whose running sum exceeds ``u * total``; zero-weight indices own
    an empty interval and are never drawn.

    A float32 running sum over 50k entries would give each index an interval that is off by up
    to an ulp of the running total (the tail's small probabilities badly so), and converting the
    whole row to float64 costs more than the rest of the draw. So long rows go in two levels:
    block masses (float32 sums of ``_CDF_BLOCK`` entries, then a float64 running sum over
    blocks) pick a block, and a float64 running sum inside that block alone picks the index.
    Each index's probability is then its weight over the total up to float32 rounding of its
    block's mass, the precision of the float32 softmax weights themselves.
    """
    rows, n = weights.shape
    if n <= 4 * _CDF_BLOCK:
        cdf = weights.double().cumsum_(-1)
        return _first_above(cdf, u[:, None] * cdf[:, -1:]).squeeze(-1)
    full = n - n % _CDF_BLOCK
    mass = weights[:, :full].view(rows, -1, _CDF_BLOCK).sum(-1)
    if full < n:
        mass = torch.cat([mass, weights[:, full:].sum(-1, keepdim=True)], dim=1)
    cum = mass.double().cumsum_(-1)
    x = u[:, None] * cum[:, -1:]
    block = _first_above(cum, x)  # [rows, 1]
    x = x - torch.where(block > 0, cum.gather(1, (block - 1).clamp_(min=0)), 0.0)
    cols = block * _CDF_BLOCK + torch.arange(_CDF_BLOCK)
    inside = weights.gather(1, cols.clamp(max=n - 1)).masked_fill_(cols >= n, 0.0)
    return (cols.gather(1, _first_above(inside.double().cumsum_(-1), x))).squeeze(-1)


def _softmax_weights(logits: torch.Tensor, row_max: torch.Tensor, temperature: float) -> torch.Tensor:
    """exp((logits - row_max) / temperature): the softmax up to its normalizer, in one buffer."""
    w = torch.sub(logits, row_max)
    if temperature != 1.0:
        w.div_(temperature)
    return w.exp_()


def _head(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax weights and token ids of the ``k`` most likely tokens, most likely first."""
    if k < logits.shape[-1]:
        values, order = torch.topk(logits, k, dim=-1)
    else:
        values, order = torch.sort(logits, dim=-1, descending=True)
    return _softmax_weights(values, values[:, :1], temperature), order


def _nucleus(logits: torch.Tensor, top_k: int, top_p: float,
             temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (zero outside the nucleus) and ids of the tokens that can hold the nucleus.

    The nucleus is the smallest most-likely-first prefix whose mass reaches ``top_p`` (of the
    top-k mass when ``top_k`` is set). Sorting 50k logits per row costs more than a decode
    step, so without ``top_k`` the ``_NUCLEUS_CANDIDATES`` most likely tokens are tried first;
    only when some row's nucleus reaches past them is the whole vocabulary sorted.
    """
    vocab = logits.shape[-1]
    total = None
    if not top_k and vocab > _NUCLEUS_CANDIDATES:
        weights, order = _head(logits, _NUCLEUS_CANDIDATES, temperature)
        row_max = logits.gather(1, order[:, :1])
        total = _softmax_weights(logits, row_max, temperature).sum(-1, keepdim=True).double()
        if bool((weights.double().sum(-1, keepdim=True) < top_p * total).any()):
            total = None  # some nucleus is wider than the candidates: sort everything
    if total is None:
        weights, order = _head(logits, top_k or vocab, temperature)
    cum = weights.double().cumsum_(-1)
    total = cum[:, -1:] if total is None else total
    return weights.masked_fill_(cum - weights >= top_p * total, 0.0), order  # mass before >= p


def pick_tokens(logits: torch.Tensor, seeds: torch.Tensor, step: int,
                params: SamplingParams) -> torch.Tensor:
    """Greedy at temperature 0, else one inverse-CDF draw per row from the softmax of
    ``logits / temperature`` restricted to the ``top_k`` most likely tokens and then to the
    smallest prefix (most likely first) whose mass reaches ``top_p``."""
    if params.temperature <= 0:
        return logits.argmax(-1)
    u = uniform_noise(seeds, step)
    weights, order = _filtered_weights(logits.float(), params)
    if order is None:
        return _inverse_cdf(weights, u)
    return order.gather(-1, _inverse_cdf(weights, u)[:, None]).squeeze(-1)


def _filtered_weights(logits: torch.Tensor, params: SamplingParams
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unnormalised sampling weights of ``logits`` [rows, vocab] (float) after the top-k /
    top-p filter, and the token id of each weight's column (None: columns are token ids)."""
    top_k = params.top_k if 0 < params.top_k < logits.shape[-1] else 0
    if params.top_p < 1.0:
        return _nucleus(logits, top_k, params.top_p, params.temperature)
    if top_k:
        return _head(logits, top_k, params.temperature)
    return _softmax_weights(logits, logits.amax(-1, keepdim=True), params.temperature), None


def token_logprobs(logits: torch.Tensor, tokens: Sequence[torch.Tensor],
                   params: SamplingParams) -> list[torch.Tensor]:
    """Per row of ``logits`` [rows, vocab], the log-probability (float64) that ``pick_tokens``
    draws each id of ``tokens[i]`` ([rows] each) from that row: the softmax of
    ``logits / temperature`` after the same top-k / top-p filter (``-inf`` outside it); at
    temperature 0, 0.0 for the argmax and ``-inf`` for anything else."""
    logits = logits.float()
    if params.temperature <= 0:
        best = logits.argmax(-1)
        return [torch.where(t == best, 0.0, float("-inf")).double() for t in tokens]
    weights, order = _filtered_weights(logits, params)
    total = weights.double().sum(-1).log_()
    out = []
    for t in tokens:
        if order is None:
            picked = weights.gather(-1, t[:, None]).squeeze(-1)
        else:
            picked = (weights * (order == t[:, None])).sum(-1)
        out.append(picked.double().log_() - total)
    return out


@torch.inference_mode()
def sampled_logprobs(model, rows: Sequence[tuple[Sequence[int], Sequence[int], bool]],
                     params: SamplingParams, stop_ids: Sequence[int], pad_id: int,
                     batch_size: int = 32) -> list[float]:
    """The probability (log) that the sampler draws each row's completion: per row
    ``(prompt ids, completion ids, finished)``, teacher-forced in batches of ``batch_size`` in
    the given order, the sum of ``token_logprobs`` over the completion's tokens plus, for a
    finished row, the log of the summed probability of the stop ids (any of them ends it)."""
    model.eval()
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        seqs = [list(p) + list(c) for p, c, _ in chunk]
        width = max(len(q) for q in seqs)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, q in enumerate(seqs):
            ids[i, :len(q)], mask[i, :len(q)] = torch.tensor(q, dtype=torch.long), 1
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        at = [(i, len(p) - 1 + j) for i, (p, c, _) in enumerate(chunk) for j in range(len(c))]
        ends = [(i, len(p) + len(c) - 1) for i, (p, c, done) in enumerate(chunk) if done]
        total = torch.zeros(len(chunk), dtype=torch.float64)
        if at:
            r, t = torch.tensor(at).T
            (lp,) = token_logprobs(logits[r, t], [ids[r, t + 1]], params)
            total.index_add_(0, r, lp)
        if ends:
            r, t = torch.tensor(ends).T
            lps = token_logprobs(logits[r, t], [s.expand(len(r)) for s in stops], params)
            total.index_add_(0, r, torch.logsumexp(torch.stack(lps), dim=0))
        out += total.tolist()
    return out


# --- GPT-2: the prompt's keys/values once per prompt ------------------------------------------


class _SharedPromptKV:
    """Per layer: the prompt's keys/values [B, H, P, D] (from the prefill, shared by the N
    samples of each prompt) and the samples' own new keys/values [B, H, N, T, D], allocated
    uninitialized (only written slots are ever read)."""

    def __init__(self, prefill_cache, n: int, new_slots: int):
        self.prompt = [(layer.keys, layer.values) for layer in prefill_cache.layers]
        b, h, _, d = self.prompt[0][0].shape
        self.new = [(torch.empty(b, h, n, new_slots, d, dtype=k.dtype),
                     torch.empty(b, h, n, new_slots, d, dtype=k.dtype)) for k, _ in self.prompt]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, t: int,
               scale: float) -> torch.Tensor:
        """Attention of one new token per sample; q, k, v are [B, H, N, D], written at slot t."""
        pk, pv = self.prompt[layer]
        nk, nv = self.new[layer]
        nk[:, :, :, t] = k
        nv[:, :, :, t] = v
        q = q * scale
        scores = torch.cat([torch.matmul(q, pk.transpose(-1, -2)),  # [B, H, N, P]
                            torch.matmul(q.unsqueeze(-2), nk[:, :, :, : t + 1].transpose(-1, -2))
                            .squeeze(-2)], dim=-1)  # [B, H, N, P + t + 1]
        w = torch.softmax(scores, dim=-1)
        p = pk.shape[2]
        out = torch.matmul(w[..., :p], pv)
        return out + torch.matmul(w[..., p:].unsqueeze(-2), nv[:, :, :, : t + 1]).squeeze(-2)


def _gpt2_logits(model: GPT2LMHeadModel, x: torch.Tensor) -> torch.Tensor:
    """``lm_head(x)``, computed over slices of the vocabulary: the same values (each logit is
    the same dot product), but MKL runs a [rows, 768] x [768, 50257] product ~1.5x faster as
    ~100 products of 512 columns each (measured at 64 and 256 rows, one thread)."""
    w = model.lm_head.weight
    vocab = w.shape[0]
    if vocab <= 2 * _HEAD_SLICE:
        return model.lm_head(x)
    out = torch.empty(x.shape[0], vocab, dtype=x.dtype)
    for start in range(0, vocab, _HEAD_SLICE):
        out[:, start : start + _HEAD_SLICE] = torch.mm(x, w[start : start + _HEAD_SLICE].t())
    return out


def _gpt2_decode_step(model: GPT2LMHeadModel, tok: torch.Tensor, position: int, t: int,
                      kv: _SharedPromptKV, b: int, n: int) -> torch.Tensor:
    """Logits [B*N, V] after feeding ``tok`` [B*N] at ``position`` (new-token slot ``t``)."""
    tr = model.transformer
    x = tr.wte(tok) + tr.wpe.weight[position]
    width = x.shape[-1]
    for i, block in enumerate(tr.h):
        attn = block.attn
        heads, d = attn.num_heads, attn.head_dim
        q, k, v = (z.view(b, n, heads, d).transpose(1, 2)
                   for z in attn.c_attn(block.ln_1(x)).split(width, dim=-1))
        a = kv.attend(i, q, k, v, t, attn.scaling)  # [B, H, N, D]
        x = x + attn.c_proj(a.transpose(1, 2).reshape(b * n, width))
        x = x + block.mlp(block.ln_2(x))
    return _gpt2_logits(model, tr.ln_f(x))


def _uses_gpt2_path(model) -> bool:
    return (isinstance(model, GPT2LMHeadModel) and not model.training
            and not model.config.add_cross_attention and model.lm_head.bias is None)


def _stop_set(stop_ids: int | Sequence[int]) -> list[int]:
    return [stop_ids] if isinstance(stop_ids, int) else list(stop_ids)


def _decode(first_logits: torch.Tensor, step_fn, seeds: torch.Tensor, params: SamplingParams,
            eos_id: int | Sequence[int], pad_id: int) -> torch.Tensor:
    """The sampling loop: ``step_fn(tok, t)`` returns the logits after feeding ``tok``; a row
    ends at any of the stop ids ``eos_id``."""
    logits = first_logits
    finished = torch.zeros(logits.shape[0], dtype=torch.bool)
    stops = _stop_set(eos_id)
    stop_t = torch.tensor(stops, dtype=torch.long)
    steps = []
    for step in range(params.max_new_tokens):
        tok = pick_tokens(logits, seeds, step, params).masked_fill_(finished, pad_id)
        steps.append(tok)
        finished |= (tok == stops[0]) if len(stops) == 1 else torch.isin(tok, stop_t)
        if step + 1 == params.max_new_tokens or bool(finished.all()):
            break
        logits = step_fn(tok, step)
    return torch.stack(steps, dim=1)


def expanded_static_cache(model, prefilled, n: int, max_len: int) -> StaticCache:
    """The prompt's cache repeated ``n`` times into a preallocated cache of ``max_len`` slots
    (the path for architectures other than GPT-2)."""
    cache = StaticCache(config=model.config, max_cache_len=max_len)
    for i, layer in enumerate(prefilled.layers):
        cache.update(layer.keys.repeat_interleave(n, 0), layer.values.repeat_interleave(n, 0), i)
    return cache


@torch.inference_mode()
def sample_expanded(model, prompt_ids: torch.Tensor, seeds: torch.Tensor, params: SamplingParams,
                    eos_id: int | Sequence[int], pad_id: int) -> torch.Tensor:
    """Sample ``params.n`` continuations of each row of ``prompt_ids`` (equal-length prompts).

    ``seeds`` holds one seed per output row (``len(prompt_ids) * n``, prompt-major). Returns new
    tokens [rows, <= max_new_tokens], padded with ``pad_id`` after each row's EOS (``eos_id``:
    one stop id or several).
    """
    n = params.n
    if params.temperature <= 0 and n > 1:  # greedy: the n samples of a prompt are identical
        one = SamplingParams(n=1, temperature=0.0, max_new_tokens=params.max_new_tokens)
        return sample_expanded(model, prompt_ids, seeds[::n], one, eos_id,
                               pad_id).repeat_interleave(n, dim=0)
    b, p = prompt_ids.shape
    out = model(input_ids=prompt_ids, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1, :].repeat_interleave(n, dim=0)
    if _uses_gpt2_path(model):
        kv = _SharedPromptKV(out.cache, n, max(params.max_new_tokens - 1, 1))

        def step_fn(tok, t):
            return _gpt2_decode_step(model, tok, p + t, t, kv, b, n)
    else:
        cache = expanded_static_cache(model, out.cache, n, p + params.max_new_tokens)

        def step_fn(tok, t):
            return model(input_ids=tok[:, None], cache=cache, use_cache=True,
                         logits_to_keep=1).logits[:, -1, :]
    return _decode(first, step_fn, seeds, params, eos_id, pad_id)


def decode_completion(tokenizer, ids: Sequence[int],
                      stop_ids: int | Sequence[int]) -> tuple[str, int, bool]:
    """Text up to (not including) the first stop id, its token count, and whether a stop id
    was reached."""
    ids = list(ids)
    stops = set(_stop_set(stop_ids))
    end = next((j for j, t in enumerate(ids) if t in stops), None)
    if end is not None:
        ids = ids[:end]
    return tokenizer.decode(ids, skip_special_tokens=True), len(ids), end is not None


_ROW_COLUMNS = ("prompt_index", "sample_index", "completion", "num_tokens", "finished", "seed")


def completion_columns(tokenizer, rows, stop_ids: int | Sequence[int], start: float) -> dict:
    """The sampler's result from ``rows`` of (prompt index, sample index, seed, new token ids):
    columns (lists) ``prompt_index``, ``sample_index``, ``completion``, ``num_tokens``,
    ``finished``, ``seed`` ordered by (prompt, sample), plus ``tokens_per_s`` and ``seconds``
    (since ``start``, a ``time.perf_counter()`` reading, up to the end of decoding).
    Every engine builds its rows here, so text, token counts and ``finished`` mean the same."""
    cols: dict[str, list] = {k: [] for k in _ROW_COLUMNS}
    new_tokens = 0
    for p, s, seed, ids in sorted(rows, key=lambda r: (r[0], r[1])):
        text, ntok, ended = decode_completion(tokenizer, ids, stop_ids)
        new_tokens += ntok + int(ended)
        for k, v in zip(_ROW_COLUMNS, (p, s, text, ntok, ended, seed)):
            cols[k].append(v)
    seconds = time.perf_counter() - start
    cols["tokens_per_s"] = new_tokens / seconds if seconds > 0 else 0.0
    cols["seconds"] = seconds
    return cols


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Plain-text prompts as the policy sees them: token ids, no special tokens added."""
    return tokenizer(list(prompts), add_special_tokens=False)["input_ids"]


def sample_prompts(model, tokenizer, prompts: Sequence[str], params: SamplingParams,
                   seed_of: Callable[[int, int], int], batch_prompts: int = 256, *,
                   prompt_ids: Sequence[Sequence[int]] | None = None,
                   stop_ids: Sequence[int] | None = None) -> dict:
    """Sample ``params.n`` completions for every text prompt: ``sample_encoded`` on the
    prompts encoded as they are (``encode_prompts``), or on ``prompt_ids`` when given
    (``chat.prompt_kwargs`` renders a chat template), ending at ``stop_ids`` (None: EOS)."""
    encoded = encode_prompts(tokenizer, prompts) if prompt_ids is None else list(prompt_ids)
    if len(encoded) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(encoded)} encoded prompts")
    return sample_encoded(model, tokenizer, encoded, params, seed_of, batch_prompts, stop_ids)


def sample_encoded(model, tokenizer, encoded: Sequence[Sequence[int]], params: SamplingParams,
                   seed_of: Callable[[int, int], int], batch_prompts: int = 256,
                   stop_ids: Sequence[int] | None = None) -> dict:
    """Sample ``params.n`` completions for every encoded prompt, each ending at the first of
    ``stop_ids`` (None: the tokenizer's EOS; empty: none, every row runs ``max_new_tokens``).

    ``seed_of(prompt_index, sample_index)`` gives each sample's seed. Prompts are grouped by
    token length so no padding enters the prompt. Returns ``completion_columns``.
    """
    model.eval()
    stops = [tokenizer.eos_token_id] if stop_ids is None else list(stop_ids)
    pad = tokenizer.pad_token_id
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    rows = []
    start = time.perf_counter()
    i = 0
    while i < len(order):
        length = len(encoded[order[i]])
        chunk = [order[i]]
        i += 1
        while i < len(order) and len(chunk) < batch_prompts and len(encoded[order[i]]) == length:
            chunk.append(order[i])
            i += 1
        seeds = [seed_of(p, s) for p in chunk for s in range(params.n)]
        ids = torch.tensor([list(encoded[p]) for p in chunk], dtype=torch.long)
        toks = sample_expanded(model, ids, torch.tensor(seeds), params, stops or -1, pad).tolist()
        rows += [(chunk[r // params.n], r % params.n, seeds[r], row) for r, row in enumerate(toks)]
    return completion_columns(tokenizer, rows, stops, start)
