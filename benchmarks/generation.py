"""Tokens/s of the project's sampler (prefill once, prompt cache shared by the N samples)
against ``generate(num_return_sequences=N, do_sample=True)`` on the same model and prompts,
then the two generation engines: ``transformers`` (that sampler) and ``vllm`` (our worker,
``rs_pipeline/engines``) against a raw ``vllm.LLM.generate`` call on the same seeded requests.

Two models, random init (nothing is downloaded): ``demo`` (the demo policy's shape: 4 layers,
width 128, vocab 16) and ``gpt2-124m`` (GPT-2 small: 12 layers, width 768, vocab 50,257).
Prompt lengths 16 and 256, N=8. Each timing is the median of ``--repeats`` runs, ours and
``generate`` alternating. EOS is disabled on both sides, so every row has exactly the new-token
count (``generate`` runs without a ``min_new_tokens`` processor). Prints one row per
(prompt length, prompts per batch) and ends with one line per model,
``<model>: ratio_p16=<x> ratio_p256=<y>`` (ours / generate, geometric mean over batch sizes).

The engine table (prompt lengths 16, 256, 1024, N=8, 8 prompts; ``--no-vllm`` skips it; it needs
``.venv-vllm`` from ``make vllm``) times, alternating, the transformers engine, ours via vLLM
(``VllmEngine.sample``: requests sent to the worker, token ids back, decoded into rows) and the
raw call (``LLM.generate`` timed inside the worker on the same prompts and seeded
``SamplingParams``), each call after vLLM's prefix cache is reset; ``in-call`` is the share of
our call's time spent inside its own ``LLM.generate`` (the rest is the wrapper). The last two
lines are ``vllm_in_call=<x>`` (geometric mean of ``in-call``) and ``vllm_wrapper_ratio=<raw / ours
time, geometric mean; >= 0.95: our wrapper within 5%> hf_vs_vllm_p1024=<transformers / vllm
tokens/s at prompt 1024 on gpt2-124m>``.
Run: ``make bench`` or ``python benchmarks/generation.py [--model demo|gpt2-124m] [--quick]``;
time it with one thread (``OMP_NUM_THREADS=1``) for numbers comparable across machines.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rs_pipeline.engines import TransformersEngine, VllmEngine
from rs_pipeline.engines.vllm_engine import CHECKOUT
from rs_pipeline.generation import SamplingParams, sample_expanded

N = 8


@dataclass(frozen=True)
class Setup:
    config: dict
    new_tokens: int
    batches: tuple[int, ...]


SETUPS = {
    # the demo policy's shape with room for 1024-token prompts
    "demo": Setup(dict(vocab_size=16, n_positions=1088, n_embd=128, n_layer=4, n_head=4,
                       activation_function="gelu"), new_tokens=32, batches=(8, 32)),
    # GPT-2 small (124M parameters; 1088 positions, for 1024-token prompts)
    "gpt2-124m": Setup(dict(vocab_size=50257, n_positions=1088, n_embd=768, n_layer=12,
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


def gmean(xs) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


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

    return f"{name}: " + " ".join(f"ratio_p{p}={gmean(r):.2f}" for p, r in ratios.items())


ENGINE_PROMPT_LENS = (16, 256, 1024)
ENGINE_PROMPTS = 8
VLLM_PYTHON = CHECKOUT / ".venv-vllm" / "bin" / "python"


def token_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A tokenizer with one token per id (the engines decode rows with the policy's own)."""
    core = Tokenizer(models.WordLevel({f"<{i}>": i for i in range(vocab)}, unk_token="<0>"))
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<0>")


def run_engines(name: str, repeats: int, folder: str,
                prompt_lens=ENGINE_PROMPT_LENS) -> dict[int, tuple[float, ...]]:
    """tokens/s of (transformers engine, ours via vLLM, raw LLM.generate) per prompt length."""
    setup = SETUPS[name]
    model = build_model(name)
    model.save_pretrained(folder)
    tok = token_tokenizer(setup.config["vocab_size"])
    hf = TransformersEngine(model, tok, batch_prompts=ENGINE_PROMPTS)
    print(f"\n{name} engines: N={N}, {ENGINE_PROMPTS} prompts, {setup.new_tokens} new tokens, "
          f"median of {repeats}")
    print(f"{'prompt':>6} {'hf tok/s':>9} {'ours-vllm tok/s':>16} {'raw vllm tok/s':>15} "
          f"{'raw/ours':>8} {'in-call':>7} {'hf/vllm':>7}", flush=True)
    out = {}
    start = time.perf_counter()
    with VllmEngine(folder, tok, VLLM_PYTHON) as vllm:
        print(f"(vLLM worker started in {time.perf_counter() - start:.0f} s)", flush=True)
        for prompt_len in prompt_lens:
            g = torch.Generator().manual_seed(prompt_len)
            ids = torch.randint(2, setup.config["vocab_size"], (ENGINE_PROMPTS, prompt_len),
                                generator=g).tolist()
            params = SamplingParams(n=N, max_new_tokens=setup.new_tokens)
            t_hf, t_ours, t_raw, in_call = engine_seconds(hf, vllm, ids, params, repeats)
            tokens = ENGINE_PROMPTS * N * setup.new_tokens
            out[prompt_len] = (tokens / t_hf, tokens / t_ours, tokens / t_raw, in_call)
            print(f"{prompt_len:>6} {tokens / t_hf:>9.0f} {tokens / t_ours:>16.0f} "
                  f"{tokens / t_raw:>15.0f} {t_raw / t_ours:>8.3f} {in_call:>7.3f} "
                  f"{t_ours / t_hf:>7.2f}",
                  flush=True)
    return out


def engine_seconds(hf, vllm, ids, params, repeats: int) -> tuple[float, ...]:
    """Median seconds of the transformers engine, ours via vLLM and the raw call, alternating,
    and the median share of our call spent inside ``LLM.generate`` (the rest is the wrapper).
    Sample s of prompt p: seed p * N + s on our side; the raw call gets the same requests."""

    def seed_of(p, s):
        return p * N + s

    seeds = [seed_of(p, 0) * N for p in range(len(ids))]
    stop: list[int] = []  # no stop id: every row has the full token count
    inner = []  # seconds inside LLM.generate of each of our calls

    def ours():
        t = seconds(lambda: vllm.sample(ids, params, seed_of, stop))
        inner.append(vllm.last_generate_seconds / t)
        return t

    runs = (lambda: seconds(lambda: hf.sample(ids, params, seed_of, stop)), ours,
            lambda: vllm.generate(ids, params, seeds, stop)["seconds"])
    vllm.generate(ids, SamplingParams(n=N, max_new_tokens=2), None, stop)  # warm-up
    times = []
    for _ in range(repeats):
        row = []
        for run in runs:
            vllm.reset_prefix_cache()  # each call prefills its prompts (once per request)
            row.append(run())
        times.append(row)
    return (*(statistics.median(col) for col in zip(*times)), statistics.median(inner))


def engine_lines(results: dict[str, dict[int, tuple[float, ...]]]) -> list[str]:
    """``vllm_in_call=<share of our calls inside LLM.generate>`` and the summary line."""
    rows = [row for r in results.values() for row in r.values()]
    big = results.get("gpt2-124m") or next(iter(results.values()))
    hf, ours = big[max(big)][:2]
    return [f"vllm_in_call={gmean([row[3] for row in rows]):.3f}",
            f"vllm_wrapper_ratio={gmean([o / raw for _, o, raw, _ in rows]):.3f} "
            f"hf_vs_vllm_p{max(big)}={hf / ours:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SETUPS), action="append",
                        help="model to measure (repeatable; default: both)")
    parser.add_argument("--prompt-len", type=int, choices=(16, 256), action="append",
                        help="prompt length to measure (repeatable; default: 16 and 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median)")
    parser.add_argument("--quick", action="store_true", help="one run, first batch size only")
    parser.add_argument("--no-vllm", action="store_true", help="skip the engine table")
    parser.add_argument("--engine-prompt-len", type=int, choices=ENGINE_PROMPT_LENS,
                        action="append", help="engine table prompt length (repeatable)")
    parser.add_argument("--no-generate", action="store_true",
                        help="skip the table against generate (engine table only)")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    lines = [] if args.no_generate else [run(name, args.prompt_len or [16, 256], repeats,
                                             args.quick)
                                         for name in (args.model or ["demo", "gpt2-124m"])]
    if not args.no_vllm:
        with tempfile.TemporaryDirectory() as tmp:
            results = {name: run_engines(name, repeats, f"{tmp}/{name}",
                                         args.engine_prompt_len or ENGINE_PROMPT_LENS)
                       for name in (args.model or ["demo", "gpt2-124m"])}
        lines += engine_lines(results)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
