"""Where a round's steps run: the executor ``scale.executor`` names.

- ``in_process`` (the default): every step in the run's own process; models load once per step.
- ``multiprocess``: Dagster's multiprocess executor, ``scale.workers`` step processes at once;
  the ``model_work`` pool (``dagster.yaml``: ``concurrency.pools``) still bounds how many model
  steps run together, so raise its limit to run the parts of a sharded step in parallel.
- ``dask``: ``dagster-dask``'s executor on a ``LocalCluster`` of ``scale.workers`` processes
  started per run, or on the running cluster at ``scale.dask_address``.

On Kubernetes or Celery, Dagster's own ``k8s_job_executor`` / ``celery_executor`` take this
place (``examples/executors/``; README "Running at scale"). The executor is read from the
settings when the definitions load, so a step process loading them again gets the same one.
"""

from __future__ import annotations

import copy
import functools

import dagster as dg

from rs_pipeline.config import ScaleConfig

# imported by every step worker before its first step (``defs.worker_preload``)
PRELOAD = "rs_pipeline.defs.worker_preload"


def round_executor(scale: ScaleConfig) -> dg.ExecutorDefinition:
    """The executor of the ``round`` job for these settings."""
    if scale.executor == "multiprocess":
        return dg.multiprocess_executor.configured(executor_config(scale), name="multiprocess")
    if scale.executor == "dask":
        return dask_executor().configured(executor_config(scale), name="dask")
    return dg.in_process_executor


def executor_config(scale: ScaleConfig) -> dict:
    """The configuration ``round_executor`` gives the multiprocess or dask executor."""
    if scale.executor == "multiprocess":
        # a forkserver that imported the package once forks each step: ~0.5 s a step instead
        # of ~10 s of imports in a fresh interpreter
        return {"max_concurrent": scale.workers,
                "start_method": {"forkserver": {"preload_modules": [PRELOAD]}}}
    if scale.executor == "dask":
        return {"cluster": {"existing": {"address": scale.dask_address}} if scale.dask_address
                else {"local": {"n_workers": scale.workers, "threads_per_worker": 1,
                                "processes": True, "dashboard_address": None,
                                "preload": [PRELOAD]}}}
    return {}


class _Sealed:
    """An argument dask passes through untouched: dask's task parsing recurses into tuples, and
    a ``DagsterRun`` (a NamedTuple holding ``@record`` fields that refuse iteration: its pools'
    ``RunOpConcurrency``, an asset selection's ``AssetKey``s) makes ``client.submit`` raise.
    Unpickled on the worker, it is the object itself."""

    def __init__(self, obj):
        self.obj = obj

    def __getattr__(self, name: str):  # the executor itself reads the run's fields
        return getattr(self.__dict__["obj"], name)

    def __reduce__(self):
        return _unsealed, (self.obj,)


def _unsealed(obj):
    return obj


def dask_executor() -> dg.ExecutorDefinition:
    """``dagster-dask``'s executor, with the run handed to dask sealed (``_Sealed``): as
    released (0.29.27), it fails on every run that uses a concurrency pool or selects assets
    with dask 2024.11 and later. Everything else is ``dagster-dask``'s own."""
    from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
    from dagster_dask import executor as dask

    class Executor(dask.DaskExecutor):
        def execute(self, plan_context, execution_plan):
            sealed = copy.copy(plan_context)
            sealed.__class__ = _sealed_context_class(type(plan_context))
            return super().execute(sealed, execution_plan)

    @dg.executor(name="dask", config_schema=dask.dask_executor.config_schema,
                 requirements=multiple_process_executor_requirements())
    def _dask(init_context):
        ((kind, config),) = init_context.executor_config["cluster"].items()
        return Executor(kind, config)

    return _dask


@functools.cache
def _sealed_context_class(base: type) -> type:
    """``base`` (the orchestration context) whose ``dagster_run`` is ``_Sealed``."""
    return type(f"Sealed{base.__name__}", (base,), {
        "dagster_run": property(lambda self: _Sealed(base.dagster_run.fget(self)))})


def scale_settings() -> ScaleConfig:
    """The ``scale`` section of the settings in force, or its defaults when they do not load
    (the preflight of the first run reports why)."""
    from rs_pipeline.context import load_settings, resolve_home
    from rs_pipeline.errors import InputError

    try:
        return load_settings(resolve_home()).scale
    except (InputError, OSError):
        return ScaleConfig()
