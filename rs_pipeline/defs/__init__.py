"""The Dagster skin: assets, checks, partitions, resources, IO manager, jobs, schedule, the labels
and continuous sensors.

Load with ``dagster dev -m rs_pipeline.defs`` (or ``rs-pipeline ui``). The CLI, the UI and the
schedule all run the two jobs defined here: ``bootstrap`` and ``round``.
"""

import dataclasses
import functools

import dagster as dg

from rs_pipeline.config import ScaleConfig
from rs_pipeline.defs.assets import all_assets
from rs_pipeline.defs.continuous import continuous_rounds
from rs_pipeline.defs.executors import round_executor, scale_settings
from rs_pipeline.defs.fanout import PART_IO
from rs_pipeline.defs.io_manager import ParquetIOManager
from rs_pipeline.defs.jobs import bootstrap_job, round_job
from rs_pipeline.defs.labelling import labels_arrived
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.nightly import nightly_round
from rs_pipeline.defs.resources import PipelineResource


def default_resources() -> dict:
    pipeline = PipelineResource()
    return {"pipeline": pipeline, "mlflow": MlflowResource(pipeline=pipeline),
            "io_manager": ParquetIOManager(pipeline=pipeline),
            PART_IO: dg.FilesystemIOManager()}  # the parts' small outputs, under $DAGSTER_HOME


def definitions(executor: dg.ExecutorDefinition | None = None,
                scale: ScaleConfig | None = None) -> dg.Definitions:
    """The code location for the ``scale`` settings (default: those in force): the executor
    they name (in process by default: models load once per step, no re-import per step;
    ``defs.executors``), or ``executor`` (a cluster's: Dagster's ``k8s_job_executor`` or
    ``celery_executor``, ``examples/``), and sampling and scoring in ``scale.shards`` parts."""
    scale = scale or scale_settings()
    return dg.Definitions(assets=all_assets(scale.shards), jobs=[bootstrap_job, round_job],
                          schedules=[nightly_round], sensors=[labels_arrived, continuous_rounds],
                          resources=default_resources(),
                          executor=executor or round_executor(scale))


defs = definitions()


@functools.lru_cache(maxsize=4)
def _job(name: str, scale: tuple) -> dg.JobDefinition:
    return definitions(scale=ScaleConfig(*scale)).resolve_job_def(name)


def job(name: str) -> dg.JobDefinition:
    """A job of ``defs`` with its resources bound (``bootstrap`` or ``round``), on the executor
    the settings in force name (read again: a process may run several homes)."""
    scale = scale_settings()
    return _job(name, tuple(dataclasses.astuple(scale)))


def round_job_def(**scale) -> dg.JobDefinition:
    """The ``round`` job, reconstructable by import path (Dagster's re-execution and the step
    processes of the multiprocess and dask executors load it so), for the ``scale`` settings
    given (default: those in force)."""
    if not scale:
        return job("round")
    return _job("round", tuple(dataclasses.astuple(ScaleConfig(**scale))))


def reconstructable_round(scale: ScaleConfig):
    """``round_job_def`` for ``scale``, by import path. The settings travel in the pointer:
    Dagster keeps the last job it reconstructed per pointer for the life of a process, so a
    pointer without them would hand a process that changed ``scale`` (a benchmark, a test, a
    long-lived launcher) the previous fan-out and executor."""
    return dg.build_reconstructable_job("rs_pipeline.defs", "round_job_def",
                                        reconstructable_kwargs=dataclasses.asdict(scale))
