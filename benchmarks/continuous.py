"""Learning continuously: champion greedy accuracy against cumulative generated tokens, small
rounds chained by continuous mode against the default rounds, on the same task and seed.

Each arm runs on its own temporary home (same settings but the round size, so the same bootstrap:
base policy, seed preference model, held-out sets) through the real ``round`` job:

- ``default``: ``ROUNDS`` rounds at the task's round size (rev8: 2048 prompts, 2000 labelled
  pairs per refresh);
- ``continuous``: rounds ``SMALL`` times smaller (prompts, labelled and replayed pairs), chained
  by the continuous sensor's own decision (``rs_pipeline.defs.continuous.tick``, each request run
  in process) with ``continuous.max_generated_tokens`` set to what the default arm generated.
  The preference model is refreshed every round, as in every round.

Writes ``continuous.csv`` and ``continuous.json`` (one row per point: arm, round, round_tokens,
tokens, state, champion_greedy_acc; the first point of an arm is its base policy at 0 tokens)
to ``--out`` (default ``dagster_home/benchmarks/``, where ``notebooks/rounds.ipynb`` draws it),
prints the curve, and ends with one line
``continuous_minus_default_greedy=<difference> tokens=<T> rounds=<continuous>/<default>``: the
continuous arm's champion accuracy once it had generated at most T tokens (what the default
arm generated) minus the default arm's final champion accuracy, and the rounds each took.
Run: ``python benchmarks/continuous.py [--quick] [--task rev8|addition] [--rounds 3]
[--small 8]`` (``--quick``: a tiny model and rounds, a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parent.parent
QUICK = {
    "task": {"eval_size": 64, "gate_size": 64, "round_size": 96},
    "policy": {"pretrain_steps": 100, "pretrain_batch_size": 64, "n_layer": 2, "n_embd": 64,
               "n_head": 2, "pretrain_lr": 3e-3},
    "generation": {"n": 4, "batch_prompts": 64},
    "preference": {"seed_pairs": 300, "pairs_per_round": 80, "replay_pairs": 40,
                   "batch_size": 32, "heldout_fraction": 0.25},
    "sft": {"batch_size": 32},
    "gate": {"min_pair_acc": 0.0},
    "recovery": {"checkpoint_steps": 0},
}


def arm_settings(task: str, quick: bool, small: int) -> dict:
    """The settings of an arm (``small`` > 1: rounds that many times smaller)."""
    from rs_pipeline.config import TASK_PRESETS, PipelineConfig, merge

    settings = merge(merge({"task": {"name": task}}, TASK_PRESETS.get(task, {})),
                     QUICK if quick else {})
    if small > 1:
        defaults = PipelineConfig()
        size = settings["task"].get("round_size", defaults.task.round_size)
        pref = settings.get("preference", {})
        pairs = pref.get("pairs_per_round", defaults.preference.pairs_per_round)
        replay = pref.get("replay_pairs", defaults.preference.replay_pairs)
        settings = merge(settings, {
            "task": {"round_size": max(1, size // small)},
            "preference": {"pairs_per_round": max(2, pairs // small),
                           "replay_pairs": replay // small}})
    return settings


def run_arm(home: Path, settings: dict, rounds: int, token_budget: int) -> list[dict]:
    """Bootstrap ``home``, then the arm's rounds: ``rounds`` of them (``token_budget`` 0), or
    chained by the continuous sensor's decision until it says the token budget is spent."""
    import dagster as dg
    import yaml

    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    if token_budget:
        settings = {**settings, "continuous": {"enabled": True,
                                               "max_generated_tokens": token_budget}}
    (home / "rs_pipeline.yaml").write_text(yaml.safe_dump(settings))
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.pop("RS_PIPELINE_CONFIG", None)
    from rs_pipeline.defs import job
    from rs_pipeline.defs.continuous import tick
    from rs_pipeline.defs.resources import PipelineResource
    from rs_pipeline.defs.runner import QUIET, run_bootstrap, run_round
    from rs_pipeline.history import champion_curve

    instance = dg.DagsterInstance.get()
    assert run_bootstrap(instance).success, "bootstrap failed"
    run_round(instance)  # the first round is a person's (or the schedule's) in continuous mode
    for _ in range(10_000 if token_budget else rounds - 1):
        if not token_budget:
            run_round(instance)
            continue
        request = tick(instance, PipelineResource().ctx)
        if isinstance(request, dg.SkipReason):
            print(f"  {request.skip_message}", flush=True)
            break
        job("round").execute_in_process(instance=instance, partition_key=request.partition_key,
                                        tags=request.tags, run_config=QUIET, raise_on_error=False)
        print(f"  {request.partition_key} done", flush=True)
    return champion_curve(PipelineResource().ctx.store)


def summary(frame) -> str:
    """The last line: the continuous arm's champion at the default arm's total tokens (its last
    round may overshoot the budget by one small round) minus the default arm's final champion."""
    default = frame[frame["arm"] == "default"]
    spent = default["tokens"].iloc[-1]
    cont = frame[(frame["arm"] == "continuous") & (frame["tokens"] <= spent)]
    delta = cont["champion_greedy_acc"].iloc[-1] - default["champion_greedy_acc"].iloc[-1]
    return (f"continuous_minus_default_greedy={delta:+.3f} tokens={spent} "
            f"rounds={len(cont) - 1}/{len(default) - 1}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny model and rounds")
    parser.add_argument("--task", default="rev8")
    parser.add_argument("--rounds", type=int, default=3, help="default-size rounds")
    parser.add_argument("--small", type=int, default=8, help="how many times smaller")
    parser.add_argument("--out", type=Path, default=ROOT / "dagster_home" / "benchmarks")
    parser.add_argument("--arm", choices=["default", "continuous"], help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:  # one arm, in its own process (one Dagster home per process)
        small = args.small if args.arm == "continuous" else 1
        curve = run_arm(args.home, arm_settings(args.task, args.quick, small), args.rounds,
                        args.budget)
        (args.home / "curve.json").write_text(json.dumps(curve))
        return

    import pandas as pd

    root = Path(tempfile.mkdtemp(prefix="rs-continuous-"))
    rows: list[dict] = []
    try:
        budget = 0
        for arm in ("default", "continuous"):
            print(f"{arm}:", flush=True)
            home = root / arm
            flags = ["--quick"] if args.quick else []
            subprocess.run([sys.executable, __file__, "--arm", arm, "--home", str(home),
                            "--task", args.task, "--rounds", str(args.rounds), "--small",
                            str(args.small), "--budget", str(budget), *flags],
                           check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            curve = json.loads((home / "curve.json").read_text())
            rows += [{"arm": arm, **point} for point in curve]
            budget = curve[-1]["tokens"]  # the continuous arm spends what the default spent
    finally:
        shutil.rmtree(root, ignore_errors=True)
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "continuous.csv", index=False)
    meta = {"task": args.task, "quick": args.quick, "rounds": args.rounds, "small": args.small}
    (args.out / "continuous.json").write_text(json.dumps({**meta, "curve": rows}, indent=1))
    print(frame.to_string(index=False))
    print(f"wrote {args.out / 'continuous.csv'}")
    print(summary(frame))

if __name__ == "__main__":
    main()
