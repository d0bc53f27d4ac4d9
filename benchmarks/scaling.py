"""Scaling out on one machine: a round's generation and scoring in 4 parts on a dask
``LocalCluster`` of 1 and then 2 worker processes (one torch thread each), side by side on the
same home, prompts, seeds and shards (``scale.shards: 4``, ``recovery.shard_prompts`` = a
quarter of the round).

The home is bootstrapped and round 1 run once in process (the reference rows); then round 1's
``generations`` and ``scores`` are re-materialized (forced) with each worker count, and their
rows must equal the reference. Per worker count it prints the span of each fanned-out asset
(first part's start to its merge's end), the parts' own model seconds (wall and CPU), and the
orchestration overhead per step (a part step's wall time minus the work it timed; a merge's whole wall time,
which reads the parts' shards and logs to MLflow), and the CPU seconds of the orchestrating
process. The pair of runs is repeated (``--repeats``, alternating 1 and 2 workers: this
machine's speed drifts by tens of percent between minutes) and ends with one line
``speedup_generation=<x> speedup_scoring=<x> speedup_gen_plus_scoring=<x>``, the medians of the
repeats' ratios (2 workers over 1).

Run: ``python benchmarks/scaling.py [--size demo|quick] [--repeats 3] [--settings JSON]`` (demo: 2,048 prompts
x 8, the default round; quick: 512 prompts).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SIZES = {"demo": {}, "quick": {"task": {"eval_size": 128, "gate_size": 128, "round_size": 512},
                               "preference": {"seed_pairs": 1500, "pairs_per_round": 500}}}
ASSETS = ("generations", "scores")
PARTS = 4


def _steps(instance, run_id: str) -> dict[str, dict]:
    """start, end and the timed model seconds of every step of a run."""
    steps: dict[str, dict] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.step_key:
            continue
        step = steps.setdefault(event.step_key, {})
        kind = event.event_type_value
        if kind == "STEP_START":
            step["start"] = record.timestamp
        elif kind == "STEP_SUCCESS":
            step["end"] = record.timestamp
        elif kind == "STEP_OUTPUT":
            meta = event.step_output_data.metadata
            if "seconds" in meta:
                step["work"] = meta["seconds"].value
                step["cpu"] = meta["cpu_seconds"].value
    return steps


def _report(label: str, steps: dict[str, dict]) -> dict[str, float]:
    spans = {}
    for asset in ASSETS:
        mine = {k: v for k, v in steps.items() if k.startswith(f"{asset}.")}
        parts = [v for k, v in mine.items() if "_part_s" in k]
        merge = mine[f"{asset}.{asset}_merge"]
        spans[asset] = merge["end"] - min(p["start"] for p in parts)
        work, cpu = sum(p["work"] for p in parts), sum(p["cpu"] for p in parts)
        overhead = sum(p["end"] - p["start"] - p["work"] for p in parts) / len(parts)
        print(f"  {label} {asset:11s}: span {spans[asset]:6.2f}s, parts' model work {work:6.2f}s "
              f"(CPU {cpu:.2f}s, busiest {max(p['work'] for p in parts):.2f}s), overhead per "
              f"part step {overhead:.2f}s, merge step {merge['end'] - merge['start']:.2f}s", flush=True)
        first = min(p["start"] for p in parts)
        print("    timeline (s from the first part's start): " + ", ".join(
            f"{k.rsplit('_part_', 1)[1]} {v['start'] - first:.1f}-{v['end'] - first:.1f}"
            for k, v in sorted(mine.items()) if "_part_s" in k)
            + f", merge {merge['start'] - first:.1f}-{merge['end'] - first:.1f}", flush=True)
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--repeats", type=int, default=3,
                        help="1-then-2-worker pairs; the last line gives the medians")
    parser.add_argument("--settings", type=json.loads, default={},
                        help='JSON merged into the settings, e.g. '
                             '\'{"generation": {"batch_prompts": 64}}\'')
    args = parser.parse_args()
    import dagster as dg

    from rs_pipeline.config import TASK_PRESETS, merge
    from rs_pipeline.defs.runner import run_bootstrap, run_round
    from rs_pipeline.storage import AssetStore

    settings = merge(merge(TASK_PRESETS["rev8"], SIZES[args.size]), args.settings)
    round_size = settings.get("task", {}).get("round_size", 2048)
    settings = merge(settings, {"recovery": {"shard_prompts": round_size // PARTS}})
    root = Path(tempfile.mkdtemp(prefix="rs-scaling-"))
    home = root / "home"
    home.mkdir()
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.pop("RS_PIPELINE_CONFIG", None)

    def configure(scale: dict) -> None:
        (home / "rs_pipeline.yaml").write_text(yaml.safe_dump(merge(settings, {"scale": scale})))
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    try:
        # one torch thread, as each worker: on some CPUs (seen on AVX-512 Xeons) a reward's last
        # float bits depend on the thread count, and the reference must be the parts' arithmetic
        configure({"torch_threads": 1})
        instance = dg.DagsterInstance.get()
        t = time.perf_counter()
        assert run_bootstrap(instance).success
        key, result = run_round(instance, "r0001")
        print(f"bootstrap + round 1 in process (reference rows): {time.perf_counter() - t:.1f}s",
              flush=True)
        store = AssetStore(str(home / "assets"))
        reference = {a: store.read_table(a, key) for a in ASSETS}
        print(f"round 1: {reference['generations'].num_rows} generations, {PARTS} parts of "
              f"{round_size // PARTS} prompts", flush=True)
        ratios = []
        for repeat in range(args.repeats):
            spans = {}
            for workers in (1, 2):
                spans[workers] = _timed_run(instance, home, key, store, reference, workers,
                                             configure)
            one, two = spans[1], spans[2]
            ratios.append((one["generations"] / two["generations"], one["scores"] / two["scores"],
                           sum(one.values()) / sum(two.values())))
            print(f"repeat {repeat + 1}: speed-up generation {ratios[-1][0]:.2f}, scoring "
                  f"{ratios[-1][1]:.2f}, generation + scoring {ratios[-1][2]:.2f}", flush=True)
        gen, scoring, both = (statistics.median(r[i] for r in ratios) for i in range(3))
        print(f"speedup_generation={gen:.2f} speedup_scoring={scoring:.2f} "
              f"speedup_gen_plus_scoring={both:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _timed_run(instance, home, key, store, reference, workers, configure) -> dict[str, float]:
    """Re-materialize the round's generations and scores on ``workers`` dask workers; the
    fanned-out assets' spans, after checking the rows equal the in-process round's."""
    import dagster as dg

    from rs_pipeline.defs.runner import _execute_round, failure_messages
    from rs_pipeline.home_lock import home_lock

    configure({"shards": PARTS, "executor": "dask", "workers": workers, "torch_threads": 1})
    t, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    with home_lock(home, "benchmark"):
        run = _execute_round(instance, key, {"rs_pipeline/force": "true"}, True,
                             asset_selection=[dg.AssetKey(a) for a in ASSETS])
    assert run.success, failure_messages(instance, run)
    used = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{workers} worker(s): run {time.perf_counter() - t:.1f}s (cluster start included); "
          f"the orchestrating process used "
          f"{used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime:.1f} CPU s", flush=True)
    spans = _report(f"{workers}w", _steps(instance, run.run_id))
    differ = {a: _difference(store.read_table(a, key), reference[a]) for a in ASSETS}
    same = not any(differ.values())
    print(f"  rows identical to the in-process round: {same}"
          + "".join(f"; {a}: {d}" for a, d in differ.items() if d), flush=True)
    assert same, "a sharded run wrote different rows"
    return spans


def _difference(table, reference) -> str:
    """'' when the tables are equal, else which columns differ, in how many rows."""
    if table.equals(reference):
        return ""
    if table.num_rows != reference.num_rows or table.schema != reference.schema:
        return f"{table.num_rows} rows vs {reference.num_rows}, schemas equal: " \
               f"{table.schema == reference.schema}"
    a, b = table.to_pydict(), reference.to_pydict()
    cols = {c: sum(x != y for x, y in zip(a[c], b[c])) for c in a}
    return ", ".join(f"{c} in {n} rows" for c, n in cols.items() if n)


if __name__ == "__main__":
    main()
