"""The rs_pipeline code location on Kubernetes: every step a pod (``dagster-k8s``).

Deploy with Dagster's Helm chart (Postgres run/event storage shared by all pods), an image with
``pip install 'rs_pipeline[s3,scale]'`` and your models, and settings whose ``storage.base_uri``
is an ``s3://`` bucket and ``storage.mlflow_tracking_uri`` a tracking server: pods share
nothing but those. Launch runs with ``run_config.yaml`` beside this file.
"""

from dagster_k8s import k8s_job_executor

from rs_pipeline.defs import definitions

defs = definitions(k8s_job_executor)
