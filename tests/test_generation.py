import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import rs_pipeline.generation as generation
from rs_pipeline.generation import (
    SamplingParams,
    pick_tokens,
    sample_expanded,
    sample_prompts,
    uniform_noise,
)
from rs_pipeline.modeling import load_policy
from rs_pipeline.tasks import get_task


def random_gpt2(vocab=500, layers=2, width=64, heads=4, seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=128, n_embd=width,
                                      n_layer=layers, n_head=heads, bos_token_id=None,
                                      eos_token_id=None, pad_token_id=0)).eval()


def random_llama(vocab=300, seed=0):
    """Not GPT-2: sampled through the generic path (prompt cache repeated into a StaticCache)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, max_position_embeddings=128,
                                        bos_token_id=None, eos_token_id=None,
                                        pad_token_id=0)).eval()


def generate_greedy(model, ids, new_tokens):
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=0)
    return out[:, ids.shape[1]:]


def test_greedy_returns_exactly_the_tokens_of_generate(tiny_policy):
    model, tok = load_policy(tiny_policy)
    prompts = get_task("rev8").prompts()[100:140]
    ours = sample_prompts(model, tok, prompts, SamplingParams(n=1, temperature=0.0,
                                                              max_new_tokens=9),
                          lambda p, s: 0, batch_prompts=16)
    ids = tok(prompts, add_special_tokens=False, return_tensors="pt").input_ids
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=9,
                         do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    expected = []
    for row in ref[:, ids.shape[1]:].tolist():
        row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
        expected.append(tok.decode(row, skip_special_tokens=True))
    assert ours["completion"] == expected


@pytest.mark.parametrize("build", [random_gpt2, lambda: random_gpt2(vocab=3000), random_llama])
def test_greedy_equals_generate_on_random_models(build):
    model = build()  # vocab 3000: logits computed over vocabulary slices
    ids = torch.randint(2, model.config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(1))
    ours = sample_expanded(model, ids, torch.arange(6), SamplingParams(n=2, temperature=0.0,
                                                                       max_new_tokens=20),
                           eos_id=-1, pad_id=0)
    assert torch.equal(ours, generate_greedy(model, ids, 20).repeat_interleave(2, dim=0))


def test_expanded_greedy_samples_are_identical_copies(tiny_policy):
    model, tok = load_policy(tiny_policy)
    prompts = get_task("rev8").prompts()[:8]
    out = sample_prompts(model, tok, prompts, SamplingParams(n=4, temperature=0.0,
                                                             max_new_tokens=9), lambda p, s: 0)
    comps = out["completion"]
    assert [comps[i * 4 : i * 4 + 4] for i in range(8)] == [[c] * 4 for c in comps[::4]]


def test_same_seed_same_rows_regardless_of_batching(tiny_policy):
    model, tok = load_policy(tiny_policy)
    prompts = get_task("rev8").prompts()[500:540]
    params = SamplingParams(n=6, temperature=1.0, max_new_tokens=9)

    def seed_of(p, s):
        return 1000 * p + s

    a = sample_prompts(model, tok, prompts, params, seed_of, batch_prompts=40)
    b = sample_prompts(model, tok, prompts, params, seed_of, batch_prompts=7)
    c = sample_prompts(model, tok, prompts, params, lambda p, s: 1000 * p + s + 1)
    assert a["completion"] == b["completion"] and a["seed"] == b["seed"]
    assert a["completion"] != c["completion"]
    assert len(set(zip(a["prompt_index"], a["completion"]))) > len(prompts)  # real sampling


@pytest.mark.parametrize("params", [SamplingParams(n=4, temperature=1.0, max_new_tokens=12),
                                    SamplingParams(n=4, temperature=0.7, top_k=20, top_p=0.9,
                                                   max_new_tokens=12)])
def test_a_row_is_a_function_of_its_seed_alone(params):
    """Same (prompt, seed) -> same row, whatever the batch size, the order of the prompts, or
    the decoding path (GPT-2's shared prompt cache or the generic StaticCache)."""
    model = random_gpt2()
    ids = torch.randint(2, 500, (5, 9), generator=torch.Generator().manual_seed(2))
    seeds = torch.arange(20) * 7919 + 11
    whole = sample_expanded(model, ids, seeds, params, eos_id=-1, pad_id=0)
    for p in range(5):  # one prompt at a time
        alone = sample_expanded(model, ids[p : p + 1], seeds[4 * p : 4 * p + 4], params, -1, 0)
        assert torch.equal(alone, whole[4 * p : 4 * p + 4])
    order = [3, 0, 4, 1, 2]  # prompts shuffled, each keeping its seeds
    rows = torch.tensor([4 * p + i for p in order for i in range(4)])
    assert torch.equal(sample_expanded(model, ids[order], seeds[rows], params, -1, 0),
                       whole[rows])
    generic = generation._uses_gpt2_path
    try:
        generation._uses_gpt2_path = lambda model: False
        assert torch.equal(sample_expanded(model, ids, seeds, params, -1, 0), whole)
    finally:
        generation._uses_gpt2_path = generic
    assert len({tuple(r) for r in whole.tolist()}) == 20  # really sampled


def test_sliced_logits_equal_the_lm_head():
    model = random_gpt2(vocab=3000)
    h = torch.randn(16, 64)
    assert torch.allclose(generation._gpt2_logits(model, h), model.lm_head(h), atol=1e-6, rtol=0)


def test_eos_ends_a_row_and_pads_the_rest():
    model = random_gpt2(vocab=6)  # small vocabulary: EOS comes up quickly
    ids = torch.randint(2, 6, (4, 5), generator=torch.Generator().manual_seed(3))
    out = sample_expanded(model, ids, torch.arange(32), SamplingParams(n=8, max_new_tokens=30),
                          eos_id=1, pad_id=0)
    for row in out.tolist():
        if 1 in row:
            assert set(row[row.index(1) + 1 :]) <= {0}
    assert (out == 1).any(dim=1).float().mean() > 0.5


def test_uniform_noise_is_a_pure_function_with_uniform_moments():
    seeds = torch.arange(200_000)
    u = uniform_noise(seeds, 3)
    assert u.dtype == torch.float64 and torch.equal(u, uniform_noise(seeds, 3))
    assert 0.0 <= u.min().item() and u.max().item() < 1.0
    assert torch.equal(uniform_noise(seeds[5:9], 3), u[5:9])  # no dependence on the batch
    c = u - 0.5
    assert abs(u.mean().item() - 1 / 2) < 0.003
    assert abs((c**2).mean().item() - 1 / 12) < 0.001
    assert abs((c**3).mean().item()) < 0.001
    assert abs((c**4).mean().item() - 1 / 80) < 0.0005
    counts = torch.bincount((u * 20).long(), minlength=20).double()
    chi2 = ((counts - 10_000) ** 2 / 10_000).sum().item()
    assert chi2 < 45  # 19 degrees of freedom: p < 0.001 above 43.8
    v = uniform_noise(seeds, 4)
    assert not torch.equal(u, v)
    for a, b in ((u, v), (u[:-1], u[1:]), (u, uniform_noise(seeds + 1, 3))):
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.01
    big = torch.tensor([2**31 - 1, 2**31, 2**40 + 5, 2**40 + 6])  # seeds past 31 bits differ
    assert len(set(uniform_noise(big, 0).tolist())) == 4


def frequencies(logits, params, rows=40_000):
    picks = pick_tokens(logits.repeat(rows, 1), torch.arange(rows), 5, params)
    return torch.bincount(picks, minlength=logits.shape[-1]).double() / rows


def test_sampling_frequencies_follow_the_softmax():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    freq = frequencies(logits, SamplingParams(temperature=1.0))
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64), atol=0.012)
    logits = torch.randn(1, 40, generator=torch.Generator().manual_seed(0)) * 2
    for t in (1.0, 0.6):
        expected = torch.softmax(logits[0].double() / t, -1)
        assert (frequencies(logits, SamplingParams(temperature=t)) - expected).abs().max() < 0.012
    assert frequencies(logits, SamplingParams(temperature=0.0)).argmax() == logits.argmax()
    top1 = pick_tokens(logits.repeat(100, 1), torch.arange(100), 0,
                       SamplingParams(temperature=1.0, top_k=1))
    assert top1.eq(logits.argmax()).all()


def test_two_level_inverse_cdf_matches_a_float64_running_sum():
    g = torch.Generator().manual_seed(4)
    weights = torch.exp(torch.randn(3000, 3000, generator=g) * 3)  # 11 blocks of 256 + a tail
    weights[:, 1000:1300] = 0  # masked runs, inside and across blocks
    weights[::2, 2900:] = 0  # rows whose last positive weight is before the tail ends
    u = uniform_noise(torch.arange(3000), 0)
    cdf = weights.double().cumsum(-1)
    expected = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
    picks = generation._inverse_cdf(weights, u)
    assert (picks == expected).float().mean() > 0.999  # may differ only at float32 rounding
    assert (weights.gather(1, picks[:, None]) > 0).all()
    edge = generation._inverse_cdf(weights[:4], torch.full((4,), 1 - 2.0**-53))
    assert torch.equal(edge, (weights[:4] > 0).cumsum(-1).argmax(-1))  # the last positive index


def test_frequencies_follow_the_softmax_over_a_large_vocabulary():
    logits = torch.randn(1, 2000, generator=torch.Generator().manual_seed(5))
    logits[0, [7, 900, 1990]] = torch.tensor([6.0, 5.5, 5.0])  # first, middle and tail block
    probs = torch.softmax(logits[0].double(), -1)
    freq = frequencies(logits, SamplingParams(temperature=1.0), rows=20_000)
    for i in (7, 900, 1990):
        assert abs(freq[i] - probs[i]) < 0.015
    blocks = lambda x: torch.stack([c.sum() for c in x.split(256)])  # noqa: E731
    assert (blocks(freq) - blocks(probs)).abs().max() < 0.015


def test_top_k_and_top_p_sample_the_renormalized_head():
    logits = torch.randn(1, 40, generator=torch.Generator().manual_seed(1)) * 2
    probs = torch.softmax(logits[0].double() / 0.8, -1)
    order = probs.argsort(descending=True)

    def head(keep):
        expected = torch.zeros_like(probs)
        expected[order[:keep]] = probs[order[:keep]] / probs[order[:keep]].sum()
        return expected

    cum = probs[order].cumsum(0)
    nucleus = int((cum - probs[order] < 0.7).sum())  # smallest head with mass >= 0.7
    cases = [(SamplingParams(temperature=0.8, top_k=5), head(5)),
             (SamplingParams(temperature=0.8, top_p=0.7), head(nucleus)),
             (SamplingParams(temperature=0.8, top_k=3, top_p=0.99), head(3))]
    for params, expected in cases:
        freq = frequencies(logits, params)
        assert (freq - expected).abs().max() < 0.012
        assert freq[expected == 0].sum() == 0  # never outside the head


def reference_picks(logits, u, params):
    """Sort everything, float64: the draw pick_tokens must reproduce."""
    values, order = torch.sort(logits.double(), dim=-1, descending=True)
    probs = torch.softmax(values / params.temperature, -1)
    if params.top_k:
        probs[:, params.top_k :] = 0
    cum = probs.cumsum(-1)
    probs[cum - probs >= params.top_p * cum[:, -1:]] = 0
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True)
    return order.gather(1, idx).squeeze(-1)


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.9, top_p=0.9),
                                    SamplingParams(temperature=1.3, top_k=1500, top_p=0.8),
                                    SamplingParams(temperature=0.7, top_k=1200)])
def test_large_vocabulary_draws_match_a_full_sort(params):
    g = torch.Generator().manual_seed(6)
    peaked = torch.randn(300, 3000, generator=g) * 4  # nucleus within the 1024 candidates
    flat = torch.randn(300, 3000, generator=g) * 0.3  # nucleus wider: the whole row is sorted
    seeds = torch.arange(300)
    for logits in (peaked, torch.cat([peaked, flat])):
        rows = torch.arange(len(logits))
        picks = pick_tokens(logits, rows, 2, params)
        expected = reference_picks(logits, uniform_noise(rows, 2), params)
        assert (picks == expected).float().mean() > 0.995  # may differ only at rounding
    assert len(set(pick_tokens(peaked, seeds, 2, params).tolist())) > 30


def test_masked_tokens_are_never_drawn():
    logits = torch.tensor([[float("-inf"), 0.0, 1.0, float("-inf")]]).repeat(5000, 1)
    picks = pick_tokens(logits, torch.arange(5000), 0, SamplingParams(temperature=1.0))
    assert set(picks.tolist()) == {1, 2}


def _filtered_logprobs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Reference: log-softmax of ``logits / temperature`` restricted to the top-k, then to the
    smallest most-likely-first prefix whose mass reaches top-p (float64, full sort)."""
    x = logits.double() / params.temperature
    if params.top_k:
        kth = x.topk(params.top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        values, order = x.sort(dim=-1, descending=True)
        p = values.softmax(-1)
        drop = p.cumsum(-1) - p >= params.top_p
        x = x.scatter(-1, order, values.masked_fill(drop, float("-inf")))
    return x.log_softmax(-1)


@pytest.mark.parametrize("build", [lambda: random_gpt2(vocab=16), lambda: random_llama(vocab=16)])
@pytest.mark.parametrize("params", [SamplingParams(n=4, max_new_tokens=6),
                                    SamplingParams(n=4, temperature=0.7, top_k=8, top_p=0.9,
                                                   max_new_tokens=6),
                                    SamplingParams(n=4, temperature=1.3, top_p=0.8,
                                                   max_new_tokens=6)])
def test_sampled_logprobs_are_the_sampling_distributions_teacher_forced(build, params):
    """``sampled_logprobs`` of sampled rows (of different lengths in one batch) equals the sum,
    over each row's tokens up to and including its stop id, of log p(token) under the filtered
    distribution computed independently (full sort, float64); a finished row's stop term
    counts every stop id."""
    model = build()
    ids = torch.randint(2, 16, (3, 6), generator=torch.Generator().manual_seed(5))
    stops = [7, 9]
    tokens = sample_expanded(model, ids, torch.arange(12) * 31 + 3, params, eos_id=stops,
                             pad_id=0)
    rows = []
    for r, row in enumerate(tokens.tolist()):
        end = next((j for j, t in enumerate(row) if t in stops), None)
        rows.append((ids[r // params.n].tolist(), row[:end] if end is not None else row,
                     end is not None))
    assert any(done for *_, done in rows) and not all(done for *_, done in rows)
    ours = generation.sampled_logprobs(model, rows, params, stops, pad_id=0, batch_size=5)
    for (prompt, completion, done), got in zip(rows, ours):
        full = torch.tensor([prompt + completion])
        with torch.no_grad():
            logits = model(input_ids=full).logits[0, len(prompt) - 1:]
        ref = _filtered_logprobs(logits, params)
        want = sum(ref[j, t].item() for j, t in enumerate(completion))
        if done:
            want += torch.logsumexp(ref[len(completion), stops], 0).item()
        assert got == pytest.approx(want, abs=1e-4)


def test_sampled_logprobs_match_how_often_the_sampler_draws_a_completion():
    """Empirically: over 6,000 seeds, each distinct completion's share of the samples is its
    ``exp(sampled_logprobs)`` (within 4 standard errors), and the shares sum to one."""
    model = random_gpt2(vocab=5, seed=3)
    prompt = torch.tensor([[2, 3, 4]])
    params = SamplingParams(n=6000, temperature=1.2, max_new_tokens=3)
    tokens = sample_expanded(model, prompt, torch.arange(6000), params, eos_id=1, pad_id=0)
    counts: dict[tuple, int] = {}
    for row in tokens.tolist():
        end = row.index(1) if 1 in row else None
        key = (tuple(row[:end] if end is not None else row), end is not None)
        counts[key] = counts.get(key, 0) + 1
    rows = [([2, 3, 4], list(c), done) for c, done in counts]
    probs = [math.exp(v) for v in generation.sampled_logprobs(model, rows, params, [1], 0)]
    assert len(counts) > 10
    for (key, count), p in zip(counts.items(), probs):
        assert abs(count / 6000 - p) <= 4 * math.sqrt(p * (1 - p) / 6000) + 1e-3, key
    every = [([2, 3, 4], [a, b, c], False) for a in (0, 2, 3, 4) for b in (0, 2, 3, 4)
             for c in (0, 2, 3, 4)]
    every += [([2, 3, 4], list(c), True) for c in ([], *([a] for a in (0, 2, 3, 4)),
                                                  *([a, b] for a in (0, 2, 3, 4)
                                                    for b in (0, 2, 3, 4)))]
    total = sum(math.exp(v) for v in generation.sampled_logprobs(model, every, params, [1], 0))
    assert total == pytest.approx(1.0, abs=1e-6)
