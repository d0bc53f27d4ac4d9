"""Tokens/s of the project's sampler (prefill once, KV cache expanded N times) against
``generate(num_return_sequences=N)`` on the same model and prompts, side by side.

Prints one row per (prompt length, prompts per batch) and ends with
``ratio_p16=<x> ratio_p256=<y>`` (ours / generate, geometric mean over the batch sizes).
Run: ``make bench`` or ``python benchmarks/generation.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rs_pipeline.generation import SamplingParams, sample_expanded

VOCAB, NEW_TOKENS, N = 16, 32, 8


def build_model() -> GPT2LMHeadModel:
    """The demo policy's shape (4 layers, width 128) with room for 256-token prompts."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=320, n_embd=128, n_layer=4, n_head=4,
                     activation_function="gelu", pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return GPT2LMHeadModel(cfg).eval()


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(model, prompt_len: int, batch: int, repeats: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(prompt_len * 1000 + batch)
    prompts = torch.randint(2, VOCAB, (batch, prompt_len), generator=g)
    params = SamplingParams(n=N, temperature=1.0, max_new_tokens=NEW_TOKENS)
    seeds = torch.arange(batch * N)
    tokens = batch * N * NEW_TOKENS

    def ours():
        out = sample_expanded(model, prompts, seeds, params, eos_id=-1, pad_id=0)
        assert out.shape == (batch * N, NEW_TOKENS)

    def hf():
        with torch.no_grad():
            out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                                 num_return_sequences=N, max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, top_k=0, pad_token_id=0)
        assert out.shape == (batch * N, prompt_len + NEW_TOKENS)

    return tokens / best_of(ours, repeats), tokens / best_of(hf, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat, batch 8 only")
    args = parser.parse_args()
    model = build_model()
    batches, repeats = ([8], 1) if args.quick else ([8, 32], 3)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, N={N}, "
          f"{NEW_TOKENS} new tokens, model {sum(p.numel() for p in model.parameters()):,} params")
    print(f"{'prompt':>6} {'batch':>5} {'ours tok/s':>11} {'generate tok/s':>15} {'ratio':>6}")
    ratios: dict[int, list[float]] = {16: [], 256: []}
    for prompt_len in (16, 256):
        for batch in batches:
            ours, hf = measure(model, prompt_len, batch, repeats)
            ratios[prompt_len].append(ours / hf)
            print(f"{prompt_len:>6} {batch:>5} {ours:>11.0f} {hf:>15.0f} {ours / hf:>6.2f}",
                  flush=True)

    def gmean(xs):
        return math.exp(sum(math.log(x) for x in xs) / len(xs))

    print(f"ratio_p16={gmean(ratios[16]):.2f} ratio_p256={gmean(ratios[256]):.2f}")


if __name__ == "__main__":
    main()
