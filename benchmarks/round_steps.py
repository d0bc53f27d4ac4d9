"""Where a round's time goes, with and without the judge-side scoring savings
(``rs_pipeline.scoring``: each distinct row scored once, length-sorted batches, a shared prompt
prefix on decoders). ``round_eval`` reuses a policy's decoded evaluation from an earlier round on
both sides.

One bootstrap (shared), then per side a copy of it runs rounds 1 and 2 through the core step
functions the assets call (no Dagster: its overhead is ``benchmarks/orchestration.py``'s
subject). Round 2 is the one measured: its champion was evaluated by round 1, as in any round
after the first. "before" sets ``scoring.ENABLED = False`` (the plain path: every row, in
1,024-row batches in table order). Prints each step's seconds and share of the round, rows asked
for and scored, token counts, that ids and selections are identical
and the largest reward difference, and ends with
``scoring_over_generation_before=<x> scoring_over_generation_after=<y>`` where scoring is
``preference_labels`` + ``scores`` and generation is ``generations``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/round_steps.py [--size tiny|quick|demo]``
(``demo``: rev8 defaults, several minutes; ``quick``: a 512-prompt round; ``tiny``: the test
settings, a smoke test of the script).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import core_rounds

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SIZES = {
    "demo": {},
    "quick": {"task": {"eval_size": 128, "gate_size": 128, "round_size": 512},
              "preference": {"seed_pairs": 1500, "pairs_per_round": 500}},
    "tiny": core_rounds.TINY,
}
SCORING = ("preference_labels", "scores")


def side(settings: dict, boot: Path, root: Path, enabled: bool) -> dict:
    """Rounds 1 and 2 on a copy of the bootstrap with the savings on or off; per step of round
    2 its seconds, scoring counters and output."""
    from core_rounds import Rounds

    from rs_pipeline import scoring
    from rs_pipeline.config import config_from_dict
    from rs_pipeline.context import RunContext

    home = root / ("after" if enabled else "before")
    shutil.copytree(boot, home)
    scoring.ENABLED = enabled

    def counters(_name):
        scoring.reset_stats()
        return lambda: dict(scoring.STATS)

    rounds = Rounds(RunContext(config_from_dict(settings), home))
    rounds.run("r0001")
    r2 = rounds.run("r0002", counters)
    return {**r2, "counts": r2["extra"]}


def report(name: str, r: dict) -> None:
    total = sum(r["secs"].values())
    print(f"-- {name}: round {total:.1f}s")
    for step, s in r["secs"].items():
        c = r["counts"][step]
        extra = ""
        if c.get("requested"):
            ratio = c["tokens_real"] / max(1, c["tokens_computed"])
            extra = (f"  scored {c.get('scored', 0)}/{c['requested']} rows"
                     f", tokens computed {c['tokens_computed']}, real/padded {ratio:.3f}")
        print(f"   {step:<18} {s:7.2f}s {100 * s / total:5.1f}%{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=list(SIZES), default="demo")
    args = parser.parse_args()
    from rs_pipeline.config import TASK_PRESETS, config_from_dict, merge
    from rs_pipeline.context import RunContext

    settings = merge(merge({"task": {"name": "rev8"}}, TASK_PRESETS["rev8"]), SIZES[args.size])
    root = Path(tempfile.mkdtemp(prefix="rs-round-steps-"))
    try:
        boot = root / "boot"
        t = time.perf_counter()
        core_rounds.bootstrap(RunContext(config_from_dict(settings), boot))
        print(f"bootstrap (shared, not compared): {time.perf_counter() - t:.1f}s", flush=True)
        b = side(settings, boot, root, enabled=False)
        a = side(settings, boot, root, enabled=True)
        report("before (round 2)", b)
        report("after (round 2)", a)
        same = {"generations": b["out"]["generations"].equals(a["out"]["generations"]),
                "sft_dataset": b["out"]["sft_dataset"].column("generation_id").equals(
                    a["out"]["sft_dataset"].column("generation_id"))}
        ids = (b["out"]["preference_labels"].select(["generation_id_a", "generation_id_b", "hp"])
               .equals(a["out"]["preference_labels"].select(
                   ["generation_id_a", "generation_id_b", "hp"])))
        diff = max((abs(x - y) for x, y in zip(b["out"]["scores"].column("reward").to_pylist(),
                                               a["out"]["scores"].column("reward").to_pylist())),
                   default=0.0)
        ev_b, ev_a = b["out"]["round_eval"], a["out"]["round_eval"]  # evaluations
        print(f"identical: generations {same['generations']}, labelled pairs {ids}, "
              f"sft_dataset {same['sft_dataset']}, gate decision "
              f"{ev_b.decision.promoted == ev_a.decision.promoted}; "
              f"max |reward difference| {diff:.2e}")
        ratio = {n: sum(r["secs"][s] for s in SCORING) / r["secs"]["generations"]
                 for n, r in (("before", b), ("after", a))}
        print(f"scoring_over_generation_before={ratio['before']:.2f} "
              f"scoring_over_generation_after={ratio['after']:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
