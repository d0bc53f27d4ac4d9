"""Adaptive best-of-N (``generation.waves``) against plain best-of-N on the same prompts and
seeds, side by side in one run.

Per task (rev8, addition), through the core steps, on one temporary home: the base policy and
the seed preference model are built once (``active_labelling``'s settings), one round's prompts
are sampled from the base policy plain (``generation.n`` samples each) and adaptively (waves
scored by the seed preference model: the model a round starts with). Both sets are scored by
that same model and the best per prompt kept (``selection.sft_dataset``); each kept set then
trains one SFT round from the base policy, and the candidates are decoded greedily on the
held-out eval prompts. Measured:

- ``tokens``: tokens generated (each completion's tokens plus its stop token);
- ``precision``: kept-set precision (the share of kept completions the verifier accepts);
- ``greedy``: greedy accuracy on the eval prompts after the SFT round;
- ``same_rows``: the share of adaptive rows identical to plain's row of the same prompt and
  sample index (1.0: adaptive's samples are a subset of plain's).

Ends with one line per task, ``<task>: token_ratio=<adaptive/plain tokens>
precision_delta=<adaptive - plain precision> next_round_greedy_delta=<adaptive - plain greedy>``.
Run: ``python benchmarks/adaptive.py [--size smoke|full] [--task rev8|addition] [--seed S]
[--waves 2,2,4] [--stop-score Z] [--stop-gain G] [--stop-margin M] [--stop-unanimous K]
[--stop-loser-quantile Q] [--stop-coverage E] [--variant W/Z/G/M/K/Q/E ...]
[--replay W/Z/G/M/K/Q/E ...]`` (defaults: the settings' defaults; ``--variant``, repeatable,
compares several rule sets against one plain run; ``--replay``, repeatable, replays rule sets
from the plain run's rows without sampling (``adaptive_replay``: token ratio and precision
only); ``smoke``: tiny models and a 128-prompt round, about a minute
per task on 2 cores).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from active_labelling import QUICK, bootstrapped, task_settings, with_settings
from adaptive_replay import replay, replay_inputs

from rs_pipeline.config import GenerationConfig

ROUND = "r0001"
DEFAULT_WAVES = "2,2,4"
RULES = ("stop_score", "stop_gain", "stop_margin", "stop_unanimous", "stop_loser_quantile",
         "stop_coverage")
SIZES = {
    "smoke": QUICK,
    "full": {"task": {"eval_size": 256, "gate_size": 8, "round_size": 2048},
             "preference": {"seed_pairs": 3000}, "generation": {"n": 8}},
}


def kept(ctx, gens, scorer) -> tuple[object, float, object]:
    """The kept set of ``gens`` under ``scorer``, its precision, and the scores."""
    from rs_pipeline.steps import judging, selection

    scores, _ = judging.score_generations(ctx, gens, scorer)
    sft, metrics = selection.sft_dataset(ctx, scores)
    return sft, metrics["select/kept_precision"], scores


def greedy_after_sft(ctx, sft, base, prompts: list[str]) -> float:
    """Greedy accuracy on ``prompts`` of the base policy fine-tuned one round on ``sft``."""
    from rs_pipeline.evaluation import greedy_completions
    from rs_pipeline.steps import training

    candidate, _ = training.train_candidate(ctx, sft, base, ROUND)
    model, tok = ctx.load_policy(candidate)
    done = greedy_completions(model, tok, prompts, ctx.sampling.max_new_tokens)
    return sum(ctx.task.verify(p, c) > 0 for p, c in zip(prompts, done)) / len(prompts)


def same_rows(adaptive, plain) -> float:
    """Share of adaptive rows equal (completion and seed) to plain's row of the same index."""
    key = ("prompt_id", "sample_index")
    p = {tuple(r[k] for k in key): (r["completion"], r["seed"]) for r in plain.to_pylist()}
    rows = adaptive.to_pylist()
    return sum(p.get(tuple(r[k] for k in key)) == (r["completion"], r["seed"])
               for r in rows) / len(rows)


def run_task(task: str, size: str, seed: int, variants: list[dict],
             replays: list[dict] = ()) -> list[dict]:
    from rs_pipeline.steps import sampling

    root = Path(tempfile.mkdtemp(prefix="rs-adaptive-"))
    try:
        t = time.perf_counter()
        ctx, pool, held, base, scorer, _ = bootstrapped(task_settings(task, seed, SIZES[size]),
                                                        root / "home")
        prompts = sampling.round_prompts(ctx, pool, ROUND)
        evals = [r["prompt"] for r in held.to_pylist() if r["split"] == "eval"]
        print(f"{task}: base policy and seed preference model in {time.perf_counter() - t:.0f}s",
              flush=True)
        rows, plain, inputs = [], None, None
        runs = [("plain", ctx, None)] + [(_label(w) if len(variants) > 1 else "adaptive",
                                          with_settings(ctx, generation=w), w) for w in variants]
        for name, run, w in runs:
            t = time.perf_counter()
            gens, metrics = sampling.generations(run, prompts, base, ROUND, scorer=scorer)
            sft, precision, scores = kept(ctx, gens, scorer)
            if name == "plain":
                plain = gens
                inputs = replay_inputs(ctx, prompts, base, gens, scores) if replays else None
            rows.append({"task": task, "method": name, "rows": gens.num_rows,
                         "tokens": sampling.generated_tokens(gens), "precision": precision,
                         "greedy": greedy_after_sft(ctx, sft, base, evals),
                         "same_rows": same_rows(gens, plain),
                         "stopped": metrics.get("gen/stopped_prompts", 0),
                         "seconds": time.perf_counter() - t})
            if inputs and w is not None:  # the replay of a sampled variant: a check
                again = replay(*inputs, w, ctx.settings.generation.n)
                rows[-1] |= {"replay_tokens": again["tokens"],
                             "replay_precision": again["precision"]}
            print(f"  {name}: {rows[-1]['seconds']:.0f}s", flush=True)
        for w in replays:
            r = replay(*inputs, w, ctx.settings.generation.n)
            rows.append({"task": task, "method": "replayed " + _label(w), "rows": "-",
                         "greedy": "-", "same_rows": "-", "seconds": "-", **r})
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _label(w: dict) -> str:
    return "/".join(str(w[k]) for k in ("waves", *RULES))


def _variant(text: str) -> dict:
    """``WAVES/STOP_SCORE/STOP_GAIN[/STOP_MARGIN[/STOP_UNANIMOUS[/STOP_LOSER_QUANTILE
    [/STOP_COVERAGE]]]]`` (``none`` switches a rule off; a rule left out is off), e.g.
    ``2,2,4/none/none/0.02/none/none/0.1``."""
    waves, *rules = text.split("/")
    num = [None if v.lower() == "none" else float(v) for v in rules]
    num += [None] * (len(RULES) - len(num))
    if num[3] is not None:
        num[3] = int(num[3])
    return {"waves": waves, **dict(zip(RULES, num))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    parser.add_argument("--task", choices=("rev8", "addition"), action="append",
                        help="one task (repeatable); default both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--waves", default=DEFAULT_WAVES)
    defaults = GenerationConfig()
    for rule in RULES:
        parser.add_argument(f"--{rule.replace('_', '-')}", default=getattr(defaults, rule),
                            type=int if rule == "stop_unanimous" else float)
    parser.add_argument("--variant", action="append", type=_variant,
                        help="WAVES/Z/G[/M[/K[/Q[/E]]]]: stop_score, stop_gain, stop_margin, "
                             "stop_unanimous, stop_loser_quantile, stop_coverage ('none': off), "
                             "repeatable: "
                             "compare several against one plain run (instead of the flags above)")
    parser.add_argument("--replay", action="append", type=_variant, default=[],
                        help="WAVES/Z/G[/M[/K[/Q[/E]]]] replayed from the plain run's rows "
                             "(adaptive_replay.py: token ratio and precision, no SFT round), "
                             "repeatable; the sampled variants are replayed too, as a check")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    variants = args.variant or [{"waves": args.waves, **{k: getattr(args, k) for k in RULES}}]
    results = {task: run_task(task, args.size, args.seed, variants, args.replay)
               for task in args.task or ["rev8", "addition"]}
    cols = ["task", "method", "rows", "stopped", "tokens", "precision", "greedy", "same_rows",
            "seconds"]
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
             for rows in results.values() for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print()
    for row in [cols, ["-" * w for w in widths], *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(f"\n{args.size} size, seed {args.seed}, waves/" + "/".join(RULES) + " "
          f"{', '.join(_label(w) for w in variants)}, {time.perf_counter() - start:.0f}s")
    for task, (plain, *others) in results.items():
        for a in others:
            if "replay_tokens" in a:
                print(f"{task} ({a['method']}): replayed token_ratio="
                      f"{a['replay_tokens'] / plain['tokens']:.3f} precision_delta="
                      f"{a['replay_precision'] - plain['precision']:+.3f} (sampled: above)")
        for a in others:
            if a["greedy"] == "-":
                print(f"{task} ({a['method']}): token_ratio={a['tokens'] / plain['tokens']:.3f} "
                      f"precision_delta={a['precision'] - plain['precision']:+.3f}")
    for task, (plain, *others) in results.items():
        adaptive = [a for a in others if a["greedy"] != "-"]
        for a in adaptive:
            name = f" ({a['method']})" if len(adaptive) > 1 else ""
            print(f"{task}{name}: token_ratio={a['tokens'] / plain['tokens']:.3f} "
                  f"precision_delta={a['precision'] - plain['precision']:+.3f} "
                  f"next_round_greedy_delta={a['greedy'] - plain['greedy']:+.3f}")


if __name__ == "__main__":
    main()
