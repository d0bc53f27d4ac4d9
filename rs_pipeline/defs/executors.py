"""Where a round's steps run: the executor ``scale.executor`` names.

- ``in_process`` (the default): every step in the run's own process; models load once per step.
- ``multiprocess``: Dagster's multiprocess executor, ``scale.workers`` step processes at once;
  the ``model_work`` pool (``dagster.yaml``: ``concurrency.pools``) still bounds how many model
  steps run together, so raise its limit to run the parts of a sharded step in parallel.
- ``dask``: Dagster's step-delegating executor handing each ready step to a free dask worker
  (``defs.dask_steps``), on a ``LocalCluster`` of ``scale.workers`` processes started per run or
  on the running cluster at ``scale.dask_address``; the ``model_work`` pool bounds it too.

On Kubernetes or Celery, Dagster's own ``k8s_job_executor`` / ``celery_executor`` take this
place (``examples/executors/``; README "Running at scale"). The executor is read from the
settings when the definitions load, so a step process loading them again gets the same one.
"""

from __future__ import annotations

import dagster as dg

from rs_pipeline.config import ScaleConfig
from rs_pipeline.defs.dask_steps import dask_step_executor

# imported by every step worker before its first step (``defs.worker_preload``)
PRELOAD = "rs_pipeline.defs.worker_preload"


def round_executor(scale: ScaleConfig) -> dg.ExecutorDefinition:
    """The executor of the ``round`` job for these settings."""
    if scale.executor == "multiprocess":
        return dg.multiprocess_executor.configured(executor_config(scale), name="multiprocess")
    if scale.executor == "dask":
        return dask_step_executor.configured(executor_config(scale), name="dask")
    return dg.in_process_executor


def executor_config(scale: ScaleConfig) -> dict:
    """The configuration ``round_executor`` gives the multiprocess or dask executor."""
    if scale.executor == "multiprocess":
        # a forkserver that imported the package once forks each step: ~0.5 s a step instead
        # of ~10 s of imports in a fresh interpreter
        return {"max_concurrent": scale.workers,
                "start_method": {"forkserver": {"preload_modules": [PRELOAD]}}}
    if scale.executor == "dask":
        return {"address": scale.dask_address, "workers": scale.workers, "preload": [PRELOAD]}
    return {}


def scale_settings() -> ScaleConfig:
    """The ``scale`` section of the settings in force, or its defaults when they do not load
    (the preflight of the first run reports why)."""
    from rs_pipeline.context import load_settings, resolve_home
    from rs_pipeline.errors import InputError

    try:
        return load_settings(resolve_home()).scale
    except (InputError, OSError):
        return ScaleConfig()
