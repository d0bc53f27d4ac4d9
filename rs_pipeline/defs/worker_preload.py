"""What a step worker loads once, before its first step: the package's definitions, the step
code with the ML stack it imports (the definitions alone load without it: ``lazy_module``;
~7 s of torch and transformers otherwise fall into each step process's first model step) and
MLflow (dask workers: ``preload``; the multiprocess executor's forkserver: ``preload_modules``).

A cold worker process otherwise pays it inside the first step that needs it: ~1.5 s to import
MLflow and ~0.9 s to open the SQLite tracking store (MLflow keeps the store per process), which
made a merge step take 2.2 s on a fresh dask worker and 0.4 s on a warm one. A long-lived
cluster pays this once per worker, not once per round.
"""

import logging
import os

import mlflow  # noqa: F401

import rs_pipeline.defs  # noqa: F401
import rs_pipeline.steps.bootstrap  # noqa: F401
import rs_pipeline.steps.evaluation  # noqa: F401
import rs_pipeline.steps.judging  # noqa: F401
import rs_pipeline.steps.monitors  # noqa: F401
import rs_pipeline.steps.sampling  # noqa: F401
import rs_pipeline.steps.selection  # noqa: F401
import rs_pipeline.steps.training  # noqa: F401


def dask_setup(worker=None) -> None:
    """dask's preload hook, in the worker process: open the tracking store of the settings in
    force. Best effort: a worker that cannot (no settings yet, a server not up) just starts
    cold, and the step reports any real problem."""
    from rs_pipeline.context import load_context

    try:
        uri = load_context().mlflow_tracking_uri
        local = uri.removeprefix("sqlite:///")
        if local == uri or os.path.exists(local):  # never create a store from here
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - warming is optional; the step itself reports
        logging.getLogger(__name__).info("worker starts with a cold MLflow store: %s", e)
