"""What a step worker loads once, before its first step: the package's definitions, the step
code with the ML stack it imports (the definitions alone load without it: ``lazy_module``;
~7 s of torch and transformers otherwise fall into each step process's first model step) and
MLflow (dask workers: ``preload``; the multiprocess executor's forkserver: ``preload_modules``).

A cold worker process otherwise pays it inside the first step that needs it: ~1.5 s to import
MLflow and ~0.9 s to open the SQLite tracking store (MLflow keeps the store per process), which
made a merge step take 2.2 s on a fresh dask worker and 0.4 s on a warm one. A long-lived
cluster pays this once per worker, not once per round.

A dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (dask's
``distributed.nanny.pre-spawn-environ``), which also pins glibc's mmap threshold at 128 KiB:
every tensor above it is mapped fresh and unmapped when freed, so each decode step page-faults
its activations in again. Measured here (one thread, the demo policy, 512 prompts x 8): 1.60 s
in such a worker, 1.15 s in a plain process. ``dask_setup`` sets the thresholds back
(``restore_malloc``): 1.08 s.

Last, the imports' ~650,000 objects are moved out of the garbage collector's sight
(``gc.freeze``): they live as long as the worker, and every full collection in a step walked
them all (0.3 s here, once every few steps: the fourth scoring part on one worker took 0.85 s,
the others 0.5 s).
"""

import ctypes
import ctypes.util
import gc
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

# what is imported now lives as long as the worker: no collection needs to walk it again
gc.collect()
gc.freeze()

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
_MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic mmap threshold (64-bit)


def restore_malloc() -> bool:
    """Undo a small ``MALLOC_TRIM_THRESHOLD_`` in this process: blocks below 32 MiB come from the
    heap again and freed memory is kept up to 64 MiB (where glibc's dynamic thresholds settle on
    their own). False where there is no glibc ``mallopt`` (macOS, musl) or it refuses."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD))


def dask_setup(worker=None) -> None:
    """dask's preload hook, in the worker process: undo the nanny's malloc trimming when it set
    one (``restore_malloc``) and open the tracking store of the settings in force. The second
    is best effort: a worker that cannot (no settings yet, a server not up) just starts cold,
    and the step reports any real problem."""
    from rs_pipeline.context import load_context

    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        restore_malloc()

    try:
        uri = load_context().mlflow_tracking_uri
        local = uri.removeprefix("sqlite:///")
        if local == uri or os.path.exists(local):  # never create a store from here
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - warming is optional; the step itself reports
        logging.getLogger(__name__).info("worker starts with a cold MLflow store: %s", e)
