"""Fanned-out steps: a round's generation and scoring split into ``scale.shards`` parallel steps.

``generations`` and ``scores`` are graph-backed assets of k + 1 ops each:

- ``<asset>_part_s0`` ... ``<asset>_part_s<k-1>`` (k = ``scale.shards``, pool ``model_work``)
  each do their part of the step's resumable work: the crash-safe shards of
  ``recovery.shard_prompts`` prompts numbered i, i + k, i + 2k, ... (``Resume.sharded(part=)``),
  each committed as it is done, and return what they did;
- ``<asset>_merge`` is the step as it always was: it finds every shard on disk and only reads
  them, so the table is the unsharded run's, row for row, whatever the number of parts.

Why fan-out steps and not round x shard multi-partitions: a round stays one run of one
partition, so the home lock, re-execution from failure, the round history, lineage and the
UI's view of a round are unchanged, and the executor alone decides where the parts run
(``rs_pipeline.defs.executors``). The fan-out is static (the definitions are built for the
``scale.shards`` in force): dask's executor plans every step up front and cannot run dynamic
ones. Change ``scale.shards`` between rounds, not while one is unfinished. The parts' small
outputs go through Dagster's own filesystem IO manager under ``$DAGSTER_HOME/storage``
(``PART_IO``), never into the asset storage.
"""

import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from rs_pipeline.defs.interrupts import remembered_interrupts
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import forced
from rs_pipeline.resume import Resume

#: The IO manager of the parts' small outputs (part index, rows, seconds).
PART_IO = "part_io_manager"
MODEL_POOL = "model_work"


def part_ops(part: dg.OpDefinition, shards: int) -> list[dg.OpDefinition]:
    """``shards`` copies of the op ``part``, the i-th named ``<part>_s<i>`` with ``part: i`` in
    its config (a static fan-out: every executor, dask's included, sees each part as a step)."""
    return [part.configured({"part": i}, name=f"{part.name}_s{i}") for i in range(shards)]


def run_part(context, pipeline: PipelineResource, asset: str, inputs: dict[str, Any],
             compute: Callable[[Resume, tuple[int, int]], tuple[Any, dict]]) -> dict[str, Any]:
    """``compute(resume, (part, k))`` for the part in the op's config, unless ``asset``'s whole
    output for these inputs is already on record; returns what the part did (rows and its
    numeric metrics)."""
    ctx, part = pipeline.ctx, context.op_config["part"]
    resume = ctx.resume(asset, context.partition_key, inputs)
    if not forced(context) and resume.reusable() is not None:
        return {"part": part, "reused": True}
    start, cpu = time.perf_counter(), time.process_time()
    with remembered_interrupts():  # its shards are committed as they are done
        table, metrics = compute(resume, (part, ctx.settings.scale.shards))
    seconds = time.perf_counter() - start
    # the step process's CPU seconds: above ``seconds`` it used more than a core, below it waited
    # for one; up when parts share a machine, the work costs more where they contend
    cpu = time.process_time() - cpu
    done = {"part": part, "rows": table.num_rows, "seconds": seconds}
    done.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    context.add_output_metadata({"rows": table.num_rows, "seconds": round(seconds, 3),
                                 "cpu_seconds": round(cpu, 3),
                                 "part": f"{part + 1} of {ctx.settings.scale.shards}"})
    return done


def parts_summary(parts: list[dict[str, Any]], seconds_key: str | None = None) -> dict[str, Any]:
    """MLflow metrics of the parts: how many there were and, with ``seconds_key``, the busiest
    part's seconds (the wall-clock of the fanned-out work when the parts ran in parallel)."""
    done = [p for p in parts if not p.get("reused")]
    out: dict[str, Any] = {"scale/parts": len(parts)}
    if seconds_key and done:
        out["scale/part_seconds_max"] = max(p.get(seconds_key, 0.0) for p in done)
        out["scale/part_seconds_sum"] = sum(p.get(seconds_key, 0.0) for p in done)
    return out
