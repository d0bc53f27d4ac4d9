"""The rs_pipeline code location on Celery workers (``dagster-celery``).

Start workers with ``dagster-celery worker start -A dagster_celery.app -y run_config.yaml``
on machines that share the instance (Postgres), the settings, the bucket of
``storage.base_uri`` and the MLflow server. Route GPU steps to GPU workers with the
``dagster-celery/queue`` op tag (see README "Running at scale").
"""

from dagster_celery import celery_executor

from rs_pipeline.defs import definitions

defs = definitions(celery_executor)
