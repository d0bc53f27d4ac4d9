"""Tokens/s of the project's sampler (prefill once, prompt cache shared by the N samples)
against ``generate(num_return_sequences=N, do_sample=True)`` on the same model and prompts.

Two models, random init (nothing is downloaded): ``demo`` (the demo policy's shape: 4 layers,
width 128, vocab 16) and ``gpt2-124m`` (GPT-2 small: 12 layers, width 768, vocab 50,257).
Prompt lengths 16 and 256, N=8. Each timing is the median of ``--repeats`` runs, ours and
``generate`` alternating. EOS is disabled on both sides, so every row has exactly the new-token
count (``generate`` runs without a ``min_new_tokens`` processor). Prints one row per
(prompt length, prompts per batch) and ends with one line per model,
``<model>: ratio_p16=<x> ratio_p256=<y>`` (ours / generate, geometric mean over batch sizes).
Run: ``make bench`` or ``python benchmarks/generation.py [--model demo|gpt2-124m] [--quick]``;
time it with one thread (``OMP_NUM_THREADS=1``) for numbers comparable across machines.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

from rs_pipeline.generation import SamplingParams, sample_expanded

N = 8


@dataclass(frozen=True)
class Setup:
    config: dict
    new_tokens: int
    batches: tuple[int, ...]


SETUPS = {
    # the demo policy's shape with room for 256-token prompts
    "demo": Setup(dict(vocab_size=16, n_positions=320, n_embd=128, n_layer=4, n_head=4,
                       activation_function="gelu"), new_tokens=32, batches=(8, 32)),
    # GPT-2 small (124M parameters)
    "gpt2-124m": Setup(dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
                            n_head=12), new_tokens=64, batches=(8,)),
}


def build_model(name: str) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(**SETUPS[name].config, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(cfg).eval()


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(model, prompt_len: int, batch: int, new_tokens: int,
            repeats: int) -> tuple[float, float]:
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(prompt_len * 1000 + batch)
    prompts = torch.randint(2, vocab, (batch, prompt_len), generator=g)
    seeds = torch.arange(batch * N)
    tokens = batch * N * new_tokens

    def ours(new=new_tokens):
        out = sample_expanded(model, prompts, seeds, SamplingParams(n=N, max_new_tokens=new),
                              eos_id=-1, pad_id=0)
        assert out.shape == (batch * N, new)

    def hf(new=new_tokens):
        gen = GenerationConfig(do_sample=True, num_return_sequences=N, max_new_tokens=new,
                               top_k=0, pad_token_id=0, eos_token_id=None)
        with torch.no_grad():
            out = model.generate(prompts, attention_mask=torch.ones_like(prompts),
                                 generation_config=gen)
        assert out.shape == (batch * N, prompt_len + new)

    ours(2)  # warm-up
    hf(2)
    t_ours, t_hf = [], []
    for _ in range(repeats):  # alternate, so a slow spell of the machine hits both
        t_ours.append(seconds(ours))
        t_hf.append(seconds(hf))
    return tokens / statistics.median(t_ours), tokens / statistics.median(t_hf)


def run(name: str, prompt_lens: list[int], repeats: int, quick: bool) -> str:
    setup = SETUPS[name]
    model = build_model(name)
    batches = setup.batches[:1] if quick else setup.batches
    print(f"\n{name}: {sum(p.numel() for p in model.parameters()):,} params, N={N}, "
          f"{setup.new_tokens} new tokens, median of {repeats}")
    print(f"{'prompt':>6} {'batch':>5} {'ours tok/s':>11} {'generate tok/s':>15} {'ratio':>6}")
    ratios: dict[int, list[float]] = {p: [] for p in prompt_lens}
    for prompt_len in prompt_lens:
        for batch in batches:
            ours, hf = measure(model, prompt_len, batch, setup.new_tokens, repeats)
            ratios[prompt_len].append(ours / hf)
            print(f"{prompt_len:>6} {batch:>5} {ours:>11.0f} {hf:>15.0f} {ours / hf:>6.2f}",
                  flush=True)

    def gmean(xs):
        return math.exp(sum(math.log(x) for x in xs) / len(xs))

    return f"{name}: " + " ".join(f"ratio_p{p}={gmean(r):.2f}" for p, r in ratios.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SETUPS), action="append",
                        help="model to measure (repeatable; default: both)")
    parser.add_argument("--prompt-len", type=int, choices=(16, 256), action="append",
                        help="prompt length to measure (repeatable; default: 16 and 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median)")
    parser.add_argument("--quick", action="store_true", help="one run, first batch size only")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    lines = [run(name, args.prompt_len or [16, 256], repeats, args.quick)
             for name in (args.model or ["demo", "gpt2-124m"])]
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
