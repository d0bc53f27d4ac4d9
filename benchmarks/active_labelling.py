"""Which pairs to label: ``random``, ``top_vs_other`` and ``active`` (an ensemble's least sure
pairs among each prompt's favourites) at the same label budget, side by side in one run.

Per task (rev8, addition), through the core steps (``rs_pipeline/steps``), on one temporary
home: the base policy and a seed preference model with ``ENSEMBLE_HEADS`` heads are built once,
one round of generations is sampled from the base policy, and then, for each strategy, the
round's pairs are chosen by the seed model, labelled by the simulated annotator (verifier with
10% flipped labels) and the seed model is refreshed on them (same budget, same settings
otherwise). Each refreshed model is measured on:

- ``pair_acc``: true pair accuracy on a fixed held-out set of on-policy pairs (the base policy's
  samples on the held-out eval prompts, random distinct pairs, labelled by the verifier alone;
  ties left out);
- ``prec@0`` / ``prec@1``: kept-set precision, the share of the round's prompts whose selected
  best completion the verifier accepts, with ``selection.uncertainty_penalty`` 0 and 1.

``decided`` is how many of the budget's labels were not ties (both right or both wrong teaches
BT nothing). Prints one table and ends with one line per task,
``<task>: active_vs_top_precision=<active / top_vs_other prec@0>
active_vs_top_pair_acc=<active / top_vs_other pair_acc>``.
Run: ``python benchmarks/active_labelling.py [--quick] [--task rev8|addition] [--seed S]``
(``--quick``: tiny models and a 128-prompt round, a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

STRATEGIES = ("random", "top_vs_other", "active")
ENSEMBLE_HEADS = 4
ROUND = "r0001"

# Shared by both sizes: K heads, one refresh per strategy from the same seed model.
COMMON = {"preference": {"ensemble_heads": ENSEMBLE_HEADS, "replay_pairs": 0},
          "recovery": {"checkpoint_steps": 0}}
QUICK = {
    "task": {"eval_size": 96, "gate_size": 8, "round_size": 128},
    "policy": {"n_layer": 2, "n_embd": 64, "n_head": 2, "pretrain_batch_size": 64,
               "pretrain_lr": 3e-3},
    "generation": {"n": 8},
    "preference": {"seed_pairs": 1200, "seed_epochs": 2.0, "seed_learning_rate": 1e-3,
                   "pairs_per_round": 96, "epochs": 2.0, "learning_rate": 5e-4, "batch_size": 32},
}
QUICK_PRETRAIN = {"rev8": 200, "addition": 500}
FULL = {
    "task": {"eval_size": 256, "gate_size": 8, "round_size": 1024},
    "preference": {"seed_pairs": 3000, "pairs_per_round": 500, "epochs": 2.0},
}


def held_out_pairs(ctx, held, base, n_pairs: int):
    """On-policy pairs of the base policy's samples on the eval prompts, verifier-labelled."""
    import pyarrow.compute as pc

    from rs_pipeline.annotators import SimulatedAnnotator, hps
    from rs_pipeline.ids import derive_seed
    from rs_pipeline.pairs import distinct_pairs
    from rs_pipeline.schemas import make_table
    from rs_pipeline.steps import sampling

    d = held.filter(pc.equal(held.column("split"), "eval")).to_pydict()
    prompts = make_table("round_prompts", {"round": ["heldout"] * len(d["prompt"]),
                                           "prompt_id": d["prompt_id"], "prompt": d["prompt"]})
    g = sampling.generations(ctx, prompts, base, "heldout")[0].to_pydict()
    picks = distinct_pairs(g["prompt_id"], g["completion"], n_pairs,
                           derive_seed(ctx.settings.seed, "heldout", "pairs"))
    triples = [(g["prompt"][a], g["completion"][a], g["completion"][b]) for a, b in picks]
    truth = hps(SimulatedAnnotator(ctx.task, label_noise=0.0).label(triples))
    return [(*t, hp) for t, hp in zip(triples, truth) if hp != 0.5]


def with_settings(ctx, **sections):
    """The same home under settings with ``sections`` merged in."""
    from rs_pipeline.config import config_from_dict, merge
    from rs_pipeline.context import RunContext

    return RunContext(config_from_dict(merge(ctx.settings.to_dict(), sections)), ctx.home)


def task_settings(task: str, seed: int, *sections: dict) -> dict:
    """``task``'s demo preset with ``sections`` merged in, in order (``QUICK`` sizes: the
    quick pretraining steps too)."""
    from rs_pipeline.config import TASK_PRESETS, merge

    settings = merge({"seed": seed, "task": {"name": task}}, TASK_PRESETS[task])
    for section in sections:
        settings = merge(settings, section)
        if section is QUICK:
            settings = merge(settings, {"policy": {"pretrain_steps": QUICK_PRETRAIN[task]}})
    return settings


def bootstrapped(settings: dict, home: Path):
    """A home under ``settings`` with its prompt sets, base policy and seed preference model:
    (ctx, pool, held, base, seed model, seed model metrics)."""
    from rs_pipeline.config import config_from_dict
    from rs_pipeline.context import RunContext
    from rs_pipeline.steps import bootstrap, judging

    ctx = RunContext(config_from_dict(settings), home)
    pool, held, _ = bootstrap.prompt_sets(ctx)
    base, _ = bootstrap.base_policy(ctx, pool)
    seed_rm, seed_metrics = judging.train_seed_preference(
        ctx, base, bootstrap.seed_preferences(ctx, pool)[0])
    return ctx, pool, held, base, seed_rm, seed_metrics


def run_task(task: str, quick: bool, seed: int) -> list[dict]:
    from rs_pipeline.preference import pair_accuracy
    from rs_pipeline.steps import judging, sampling, selection

    settings = task_settings(task, seed, COMMON, QUICK if quick else FULL)
    root = Path(tempfile.mkdtemp(prefix="rs-active-"))
    try:
        t = time.perf_counter()
        ctx, pool, held, base, seed_rm, seed_metrics = bootstrapped(settings, root / "home")
        gens, _ = sampling.generations(ctx, sampling.round_prompts(ctx, pool, ROUND), base, ROUND)
        truth = held_out_pairs(ctx, held, base, 4 * ctx.settings.preference.pairs_per_round)
        print(f"{task}: base policy, seed preference model (held-out pair acc "
              f"{seed_metrics['seed_pref/pair_acc']:.3f}), {gens.num_rows} generations and "
              f"{len(truth)} decided held-out pairs in {time.perf_counter() - t:.0f}s", flush=True)
        rows = []
        for strategy in STRATEGIES:
            t = time.perf_counter()
            sctx = with_settings(ctx, preference={"pair_strategy": strategy})
            labels, label_stats = judging.label_pairs(sctx, gens, seed_rm, ROUND)
            rm, _ = judging.refresh_preference(sctx, labels, seed_rm, [], ROUND)
            row = {"task": task, "strategy": strategy, "labels": labels.num_rows,
                   "decided": labels.num_rows - label_stats["ties"],
                   "pair_acc": pair_accuracy(*ctx.load_preference(rm), truth)}
            for penalty in (0.0, 1.0):
                pctx = with_settings(sctx, selection={"uncertainty_penalty": penalty})
                scores, _ = judging.score_generations(pctx, gens, rm)
                metrics = selection.sft_dataset(pctx, scores)[1]
                row[f"prec@{penalty:g}"] = metrics["select/kept_precision"]
                row[f"kept_spread@{penalty:g}"] = metrics["select/kept_mean_spread"]
            row["seconds"] = time.perf_counter() - t
            rows.append(row)
            print(f"  {strategy}: {row['seconds']:.0f}s", flush=True)
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}" if a is not None and b else "nan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny models, a 128-prompt round")
    parser.add_argument("--task", choices=("rev8", "addition"), action="append",
                        help="one task (repeatable); default both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    tasks = args.task or ["rev8", "addition"]
    results = {task: run_task(task, args.quick, args.seed) for task in tasks}

    cols = ["task", "strategy", "labels", "decided", "pair_acc", "prec@0", "prec@1",
            "kept_spread@0", "kept_spread@1"]
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
             for rows in results.values() for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print()
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(f"\n{'quick' if args.quick else 'full'} size, seed {args.seed}, "
          f"{time.perf_counter() - start:.0f}s")
    for task, rows in results.items():
        by = {r["strategy"]: r for r in rows}
        act, top = by["active"], by["top_vs_other"]
        print(f"{task}: active_vs_top_precision={ratio(act['prec@0'], top['prec@0'])} "
              f"active_vs_top_pair_acc={ratio(act['pair_acc'], top['pair_acc'])}")


if __name__ == "__main__":
    main()
