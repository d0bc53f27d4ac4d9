"""Running a step at most once per (code, settings, inputs): an asset whose work is already on
record returns it without model work, unless the run is tagged ``rs_pipeline/force=true``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from rs_pipeline.defs.interrupts import remembered_interrupts
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.resume import Resume

FORCE_TAG = "rs_pipeline/force"


def forced(context) -> bool:
    """Whether the run is tagged to redo work that is already on record."""
    return context.run.tags.get(FORCE_TAG) == "true"


def run_step(context: dg.AssetExecutionContext, pipeline: PipelineResource, asset: str,
             inputs: dict[str, Any],
             compute: Callable[[Resume], tuple[Any, dict]]) -> tuple[Any, dict, bool]:
    """``compute(resume)`` unless this exact work is on record; returns (value, metrics,
    reused). Shards of an interrupted attempt are picked up by ``compute``."""
    partition = context.partition_key if context.has_partition_key else None
    resume = pipeline.ctx.resume(asset, partition, inputs)
    if not forced(context):
        stored = resume.reusable()
        if stored is not None:
            return stored, {}, True
    with remembered_interrupts():  # a swallowed Ctrl-C stops the run once the work is recorded
        value, metrics = compute(resume)
        resume.record(value)
        resume.clear_shards()
    return value, metrics, False
