"""The Dagster skin: assets, checks, partitions, resources, IO manager, jobs, schedule, the labels
and continuous sensors.

Load with ``dagster dev -m rs_pipeline.defs`` (or ``rs-pipeline ui``). The CLI, the UI and the
schedule all run the two jobs defined here: ``bootstrap`` and ``round``.
"""

import dagster as dg

from rs_pipeline.defs.assets import ALL_ASSETS
from rs_pipeline.defs.continuous import continuous_rounds
from rs_pipeline.defs.io_manager import ParquetIOManager
from rs_pipeline.defs.jobs import bootstrap_job, round_job
from rs_pipeline.defs.labelling import labels_arrived
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.nightly import nightly_round
from rs_pipeline.defs.resources import PipelineResource


def default_resources() -> dict:
    pipeline = PipelineResource()
    return {"pipeline": pipeline, "mlflow": MlflowResource(pipeline=pipeline),
            "io_manager": ParquetIOManager(pipeline=pipeline)}


# Steps run in one process (models load once per step, no re-import per step); on a cluster,
# swap in a k8s/celery executor here.
defs = dg.Definitions(assets=ALL_ASSETS, jobs=[bootstrap_job, round_job], schedules=[nightly_round],
                      sensors=[labels_arrived, continuous_rounds], resources=default_resources(),
                      executor=dg.in_process_executor)


def job(name: str) -> dg.JobDefinition:
    """A job of ``defs`` with its resources bound (``bootstrap`` or ``round``)."""
    return defs.resolve_job_def(name)


def round_job_def() -> dg.JobDefinition:
    """The ``round`` job, reconstructable by import path (Dagster's re-execution needs it)."""
    return job("round")
