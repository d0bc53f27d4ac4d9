"""Training methods and selection rules side by side, round by round, at the same compute.

Per task (rev8, addition), one bootstrap (prompt sets, base policy, seed preference model) is
shared; then each variant runs ``--rounds`` rounds from a copy of it through the core steps
(``core_rounds.Rounds``: the asset graph's order and inputs, gate included), with the same
prompts, samples per prompt and label budget. The preference model selects (the verifier only
measures). Variants: the training method (``sft.method``: sft, dpo, sft+dpo), the selection rule
(argmax, top_k, a percentile cut, ReST's rising percentile, per-prompt normalisation, a length
penalty, the best-ever pool, the random-pick baseline) and adaptive best-of-N
(``generation.waves``), each changing one thing from the default.

Per round it records the candidate's and the champion's (after the gate) greedy and sampled
accuracy on the eval split, the kept set's precision (share of kept completions the verifier
accepts), whether the gate promoted, and the tokens generated so far. Prints one Markdown table
per task (the README's table) and ends with one line per task,
``<task>: best=<variant> champion_greedy=<x> default=<y> random=<z>``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/methods.py [--size tiny|quick|demo] [--task T]
[--only v1,v2] [--rounds 3] [--json out.json]`` (``quick``: 512-prompt rounds, ~1 min per
variant and round on 2 cores; ``tiny``: the test settings, a smoke test of the script).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import core_rounds

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

VARIANTS: dict[str, dict] = {
    "sft (default)": {},
    "dpo": {"sft": {"method": "dpo"}},
    "sft+dpo": {"sft": {"method": "sft+dpo"}},
    "top_k=2": {"selection": {"rule": "top_k", "top_k": 2}},
    "percentile=50": {"selection": {"percentile": 50.0}},
    "rising (ReST)": {"selection": {"percentile": 80.0, "rising_percentile_step": 20.0,
                                    "min_percentile": 40.0}},
    "normalize=prompt": {"selection": {"normalize": "prompt"}},
    "length_penalty=0.1": {"selection": {"length_penalty": 0.1}},
    "best_ever": {"selection": {"best_ever": True}},
    "random (baseline)": {"selection": {"rule": "random"}},
    "adaptive 2+2+4": {"generation": {"waves": "2,2,4", "stop_score": 0.5, "stop_margin": None}},
    "likelihood reward": {"preference": {"reward": "likelihood"}},
}
#: Variants whose seed preference model differs from the shared bootstrap's: trained anew (the
#: base policy is reused from the bootstrap's cache).
OWN_SEED_MODEL = ("preference",)
SIZES = {
    "demo": {},
    "quick": {"task": {"eval_size": 256, "gate_size": 256, "round_size": 512},
              "preference": {"seed_pairs": 3000, "pairs_per_round": 500, "replay_pairs": 500}},
    "tiny": core_rounds.TINY,
}


def run_variant(settings: dict, boot: Path, home: Path, rounds: int,
                own_seed_model: bool = False) -> list[dict]:
    from rs_pipeline.config import config_from_dict
    from rs_pipeline.context import RunContext
    from rs_pipeline.steps.sampling import generated_tokens

    shutil.copytree(boot, home)
    ctx = RunContext(config_from_dict(settings), home)
    if own_seed_model:
        core_rounds.bootstrap(ctx)
    loop = core_rounds.Rounds(ctx)
    rows, tokens = [], 0
    for r in range(1, rounds + 1):
        t = time.perf_counter()
        result = loop.run(f"r{r:04d}")
        m = result["metrics"]
        tokens += generated_tokens(result["out"]["generations"])
        promoted = result["promoted"]
        side = "eval" if promoted else "champion_eval"
        rows.append({
            "round": r, "tokens": tokens, "promoted": promoted,
            "kept_precision": m.get("select/kept_precision"),
            "pair_acc": m.get("pref/pair_acc"),
            "candidate_greedy": m.get("eval/greedy_acc"),
            "candidate_sampled": m.get("eval/sample_acc"),
            "champion_greedy": m.get(f"{side}/greedy_acc"),
            "champion_sampled": m.get(f"{side}/sample_acc"),
            "seconds": time.perf_counter() - t})
    return rows


def fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(task: str, results: dict[str, list[dict]]) -> str:
    lines = [f"**{task}** (per round r1 / r2 / r3; champion = after the gate)", "",
             "| variant | kept precision | candidate greedy | champion greedy | champion sampled "
             "| promoted | tokens (cumulative) |", "|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        def col(key, rows=rows):
            return " / ".join(fmt(r[key]) for r in rows)
        lines.append(f"| {name} | {col('kept_precision')} | {col('candidate_greedy')} | "
                     f"{col('champion_greedy')} | {col('champion_sampled')} | "
                     f"{' '.join('y' if r['promoted'] else 'n' for r in rows)} | "
                     f"{' / '.join(str(round(r['tokens'] / 1000)) + 'k' for r in rows)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=list(SIZES), default="quick")
    parser.add_argument("--task", choices=("rev8", "addition"), action="append")
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--settings", type=json.loads, default={},
                        help='JSON merged into every variant, bootstrap included, e.g. '
                             '\'{"preference": {"reward": "likelihood"}}\'')
    args = parser.parse_args()
    from rs_pipeline.config import TASK_PRESETS, config_from_dict, merge
    from rs_pipeline.context import RunContext

    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    everything, summary = {}, []
    for task in args.task or ["rev8", "addition"]:
        base = merge(merge({"seed": args.seed, "task": {"name": task}}, TASK_PRESETS[task]),
                     SIZES[args.size])
        base = merge(base, args.settings)
        root = Path(tempfile.mkdtemp(prefix=f"rs-methods-{task}-"))
        try:
            t = time.perf_counter()
            core_rounds.bootstrap(RunContext(config_from_dict(base), root / "boot"))
            print(f"{task}: bootstrap {time.perf_counter() - t:.0f}s", flush=True)
            results = {}
            for i, name in enumerate(names):
                rows = run_variant(merge(base, VARIANTS[name]), root / "boot", root / f"v{i}",
                                   args.rounds, any(k in VARIANTS[name] for k in OWN_SEED_MODEL))
                results[name] = rows
                greedy = " ".join(fmt(r["champion_greedy"]) for r in rows)
                print(f"  {name}: champion greedy {greedy} "
                      f"({sum(r['seconds'] for r in rows):.0f}s)", flush=True)
                shutil.rmtree(root / f"v{i}", ignore_errors=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(table(task, results), flush=True)
        everything[task] = results
        final = {n: r[-1]["champion_greedy"] or 0.0 for n, r in results.items()}
        best = max(final, key=final.get)
        summary.append(f"{task}: best={best!r} champion_greedy={final[best]:.3f} "
                       f"default={fmt(final.get('sft (default)'))} "
                       f"random={fmt(final.get('random (baseline)'))}")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))
    print("\n".join(summary))


if __name__ == "__main__":
    main()
