import torch

from rs_pipeline.generation import SamplingParams, gumbel_noise, sample_prompts
from rs_pipeline.modeling import load_policy
from rs_pipeline.tasks import get_task


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


def test_gumbel_noise_is_a_pure_function_with_the_right_moments():
    seeds = torch.arange(2000)
    g1, g2 = gumbel_noise(seeds, 3, 50), gumbel_noise(seeds, 3, 50)
    assert torch.equal(g1, g2)
    assert not torch.equal(g1, gumbel_noise(seeds, 4, 50))
    assert abs(g1.mean().item() - 0.5772) < 0.02  # Euler-Mascheroni
    assert abs(g1.var().item() - 1.6449) < 0.05  # pi^2 / 6


def test_sampling_frequencies_follow_the_softmax():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(30000, 1)
    from rs_pipeline.generation import pick_tokens

    picks = pick_tokens(logits, torch.arange(30000), 0, SamplingParams(temperature=1.0))
    freq = torch.bincount(picks, minlength=3).float() / 30000
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.015)
    top1 = pick_tokens(logits[:100], torch.arange(100), 0, SamplingParams(temperature=1.0, top_k=1))
    assert top1.eq(0).all()
