"""Cheap scoring (rs_pipeline.scoring) gives the plain path's rewards: sorted batches, shared
prompt prefix on GPT-2 and Llama decoders (LoRA-wrapped too), each distinct row once; encoders
keep the sorted path."""

import copy
import random

import pytest
import torch

from rs_pipeline import scoring
from rs_pipeline.modeling import build_char_tokenizer, build_tiny_gpt2, load_preference
from rs_pipeline.testing_models import build_bpe_chat_tokenizer, build_tiny_llama


def _rows(seed: int = 0, n_prompts: int = 12, n: int = 6):
    """Prompts of mixed lengths with N completions each (duplicates, an empty one, long ones)."""
    rng = random.Random(seed)
    prompts, completions = [], []
    for _ in range(n_prompts):
        prompt = "".join(rng.choice("012") for _ in range(rng.choice([3, 8, 8, 15]))) + "="
        for s in range(n):
            length = rng.choice([0, 1, 4, 8, 8, 30]) if s else 8
            comp = "".join(rng.choice("012") for _ in range(length))
            prompts.append(prompt)
            completions.append(comp if s != 3 else completions[-1])  # a duplicate
    return prompts, completions


@pytest.fixture(scope="module")
def gpt2_rm(tmp_path_factory):
    tok = build_char_tokenizer("012=")
    folder = tmp_path_factory.mktemp("gpt2_rm")
    build_tiny_gpt2(tok, 2, 32, 4, 64, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    return load_preference(folder, heads=1)


@pytest.fixture(scope="module")
def llama_rm(tmp_path_factory):
    tok = build_bpe_chat_tokenizer(["012=210", "hello there, how are you", "the answer is 42"])
    folder = tmp_path_factory.mktemp("llama_rm")
    build_tiny_llama(tok, hidden=32, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    return load_preference(folder, heads=2)


@pytest.fixture(autouse=True)
def _fresh():
    scoring.reset_stats()
    scoring.ENABLED = True
    yield
    scoring.ENABLED = True


@pytest.mark.parametrize("which", ["gpt2_rm", "llama_rm"])
def test_sorted_and_shared_prefix_equal_the_plain_path(which, request):
    model, tok = request.getfixturevalue(which)
    prompts, completions = _rows()
    plain = scoring.plain_heads(model, tok, prompts, completions, batch_size=7)
    sorted_ = scoring.score_heads(model, tok, prompts, completions, batch_size=7,
                                  shared_prefix=False)
    scoring.reset_stats()
    shared = scoring.score_heads(model, tok, prompts, completions, batch_size=7)
    assert plain.shape == shared.shape == (len(prompts), model.config.num_labels)
    assert torch.allclose(sorted_, plain, atol=1e-5)
    assert torch.allclose(shared, plain, atol=1e-5)
    # the prefix is computed once per distinct prompt: fewer tokens than the plain rows hold
    plain_tokens = sum(len(r["input_ids"]) for r in scoring.encode(tok, prompts, completions))
    assert scoring.STATS["tokens_real"] < plain_tokens
    assert scoring.STATS["distinct"] < len(prompts)  # duplicates scored once


def test_one_big_batch_equals_many_small_ones(gpt2_rm):
    model, tok = gpt2_rm
    prompts, completions = _rows(seed=1)
    a = scoring.score_heads(model, tok, prompts, completions, batch_size=1024)
    b = scoring.score_heads(model, tok, prompts, completions, batch_size=3)
    assert torch.allclose(a, b, atol=1e-5)


def test_the_same_rows_score_bit_for_bit_the_same_and_duplicates_tie_exactly(gpt2_rm):
    """A step re-run after a crash scores its rows in the same batches (no cache across calls):
    equal bit for bit; copies of one row get one value, so selection ties are exact."""
    model, tok = gpt2_rm
    prompts, completions = _rows(seed=2)
    first = scoring.score_heads(model, tok, prompts, completions, batch_size=5)
    scoring.score_heads(model, tok, prompts[:7], completions[:7], batch_size=5)  # other work
    again = scoring.score_heads(model, tok, prompts, completions, batch_size=5)
    assert torch.equal(first, again)
    backwards = scoring.score_heads(model, tok, prompts[::-1], completions[::-1], batch_size=5)
    assert torch.equal(backwards.flip(0), first)  # the set of rows decides, not their order
    copies = [i for i in range(len(prompts)) if i % 6 == 3]  # _rows' duplicate of the row before
    assert all(torch.equal(first[i], first[i - 1]) for i in copies)


def test_a_lora_wrapped_model_shares_the_prefix_and_equals_the_plain_path(gpt2_rm):
    from rs_pipeline.config import LoraConfig
    from rs_pipeline.lora import wrap

    model, tok = gpt2_rm
    wrapped = wrap(copy.deepcopy(model), LoraConfig(enabled=True, r=4), "SEQ_CLS", "x.lora")
    for name, p in wrapped.named_parameters():  # adapters that change the rewards
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5, generator=torch.Generator().manual_seed(0))
    prompts, completions = _rows(seed=4)
    shared = scoring.score_heads(wrapped, tok, prompts, completions, batch_size=7)
    assert scoring.STATS["tokens_real"] < sum(
        len(r["input_ids"]) for r in scoring.encode(tok, prompts, completions))
    plain = scoring.plain_heads(wrapped, tok, prompts, completions, batch_size=7)
    assert torch.allclose(shared, plain, atol=1e-5)
    assert not torch.allclose(plain, scoring.plain_heads(model, tok, prompts, completions),
                              atol=1e-3)


def test_sorted_batches_pad_less_than_plain_on_a_skewed_mix(gpt2_rm):
    model, tok = gpt2_rm
    prompts = ["01="] * 64
    completions = ["0" * (50 if i % 8 == 0 else 2) for i in range(64)]
    completions = [c + str(i % 3) * (i % 5) for i, c in enumerate(completions)]
    scoring.plain_heads(model, tok, prompts, completions, batch_size=16)
    before = scoring.STATS["tokens_real"] / scoring.STATS["tokens_computed"]
    scoring.reset_stats()
    scoring.score_heads(model, tok, prompts, completions, batch_size=16, shared_prefix=False)
    after = scoring.STATS["tokens_real"] / scoring.STATS["tokens_computed"]
    assert after > 1.5 * before  # 0.45 vs 0.25


def test_disabled_is_the_plain_path(gpt2_rm):
    model, tok = gpt2_rm
    prompts, completions = _rows(seed=3)
    scoring.ENABLED = False
    a = scoring.score_heads(model, tok, prompts, completions)
    assert torch.equal(a, scoring.plain_heads(model, tok, prompts, completions))
    assert scoring.STATS["scored"] == 2 * len(prompts)


def test_an_encoder_keeps_the_plain_path(minilm_base):
    model, tok = load_preference(minilm_base)
    assert scoring._parts(model) is None and not scoring._reads_prefix_first(tok)
    prompts, completions = ["good movie?"] * 3 + ["bad"] * 2, ["yes", "no", "yes", "a", "bb"]
    a = scoring.score_heads(model, tok, prompts, completions)
    assert torch.allclose(a, scoring.plain_heads(model, tok, prompts, completions), atol=1e-5)
