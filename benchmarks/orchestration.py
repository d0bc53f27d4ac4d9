"""What orchestration costs: one round through Dagster (the ``round`` job, IO manager, event log,
asset checks, MLflow) against the same core step functions called directly, side by side.

Both paths start from the same bootstrap (copied, so neither finds the other's checkpoints),
write the same Parquet tables and checkpoints, and must produce identical generations. Prints
each path's seconds and ends with ``dagster_over_direct=<x>`` (goal <= 1.3).
Run: ``python benchmarks/orchestration.py [--quick]`` (``--quick``: a smaller round).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUICK = {"task": {"eval_size": 128, "gate_size": 128, "round_size": 512},
         "preference": {"seed_pairs": 1500, "pairs_per_round": 500}}
BOOTSTRAP_FILES = ["prompt_pool.parquet", "eval_prompts.parquet", "base_policy.json",
                   "seed_preference_model.json", "seed_preferences.parquet", "checkpoints"]


def direct_round(ctx, key: str) -> None:
    """The first round's steps in graph order, reading and writing the same store."""
    from rs_pipeline.steps import evaluation, judging, sampling, selection, training

    store = ctx.store
    pool, held = store.read_table("prompt_pool"), store.read_table("eval_prompts")
    champion, previous_rm = store.read_record("base_policy"), store.read_record(
        "seed_preference_model")
    prompts = sampling.round_prompts(ctx, pool, key)
    store.write_table("round_prompts", prompts, key)
    gens, _ = sampling.generations(ctx, prompts, champion, key)
    store.write_table("generations", gens, key)
    labels, _ = judging.label_pairs(ctx, gens, previous_rm, key)
    store.write_table("preference_labels", labels, key)
    rm, _ = judging.refresh_preference(ctx, labels, previous_rm, [], key)
    store.write_record("preference_model", rm, key)
    scores, _ = judging.score_generations(ctx, gens, rm)
    store.write_table("scores", scores, key)
    sft, _ = selection.sft_dataset(ctx, scores)
    store.write_table("sft_dataset", sft, key)
    store.write_table("dpo_pairs", selection.dpo_dataset(ctx, scores)[0], key)
    candidate, _ = training.train_candidate(ctx, sft, champion, key)
    store.write_record("policy_checkpoint", candidate, key)
    ev, _ = evaluation.evaluate_round(ctx, candidate, champion, rm, held, key)
    store.write_record("round_eval", ev, key)
    if ev.decision.promoted:
        store.write_record("promotion", evaluation.promote(ev, candidate), key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 512-prompt round")
    args = parser.parse_args()
    import dagster as dg

    from rs_pipeline.config import TASK_PRESETS, config_from_dict, merge
    from rs_pipeline.context import RunContext
    from rs_pipeline.defs.runner import run_bootstrap, run_round

    settings = merge(TASK_PRESETS["rev8"], QUICK if args.quick else {})
    root = Path(tempfile.mkdtemp(prefix="rs-orchestration-"))
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (home / "rs_pipeline.yaml").write_text(yaml.safe_dump(settings))
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.pop("RS_PIPELINE_CONFIG", None)
    try:
        instance = dg.DagsterInstance.get()
        t = time.perf_counter()
        assert run_bootstrap(instance).success
        print(f"bootstrap (shared, not compared): {time.perf_counter() - t:.1f}s", flush=True)
        direct_home = root / "direct"
        for name in BOOTSTRAP_FILES:
            src, dst = home / "assets" / name, direct_home / "assets" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
        ctx = RunContext(config_from_dict(settings), direct_home)

        t = time.perf_counter()
        direct_round(ctx, "r0001")
        direct = time.perf_counter() - t
        print(f"direct core calls: {direct:.1f}s", flush=True)
        t = time.perf_counter()
        _, result = run_round(instance, "r0001")
        through = time.perf_counter() - t
        print(f"through Dagster:   {through:.1f}s (run {'succeeded' if result.success else 'ended'}"
              " with the gate's decision)", flush=True)
        same = ctx.store.read_table("generations", "r0001").equals(
            RunContext(config_from_dict(settings), home).store.read_table("generations", "r0001"))
        print(f"identical generations: {same}")
        assert same, "the two paths did different work"
        print(f"dagster_over_direct={through / direct:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
