"""A round's steps on a dask cluster: Dagster's step-delegating executor with a dask step handler.

Dagster's executor launches each step when it is ready (its upstream steps done, a slot of its
concurrency pool free), at most ``scale.workers`` at a time. The handler hands it to a dask
worker that is free at that moment, as one task that runs the step in the worker's process the
way ``dagster api execute_step`` runs it in a Kubernetes pod: the step writes its events to the
run's event log and the executor tails it. So no step queues behind another while a worker
idles, and the ``model_work`` pool bounds model steps as on every other executor.

Why not ``dagster-dask``'s executor (0.29.27): it submits the whole plan up front with each
step's upstream futures as arguments, so dask places a step on the worker holding its upstream
result (every scoring part beside the generations merge) and leaves the balance to its work
stealing, which, knowing no durations, moved parts behind a busy worker (measured: 3 of 4
generation parts on one of two workers, all 4 scoring parts on one with stealing off); it
ignores pools; and as released it fails on every run that uses a pool.

Worker deaths: a LocalCluster started here lets no task be retried on another worker
(``allowed-failures: 0``), so a killed worker fails its step (one health check later) instead
of silently running it twice; the plain rerun resumes it (README "Crashes, interruptions and bad input").
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator

import dagster as dg
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.step_delegating import (
    CheckStepHealthResult,
    StepDelegatingExecutor,
    StepHandler,
    StepHandlerContext,
)

from rs_pipeline.errors import InputError

POLL_SECONDS = 0.1  # how often the executor reads the run's event log
HEALTH_SECONDS = 2  # how often it asks dask whether a running step's task failed
FREE_WORKER_WAIT = 10.0  # a step launched as another ends: wait this long for its worker
#: The LocalCluster started for a run: no task retried on another worker (a killed worker
#: fails its step, below), and no statistical profiler in the workers (it samples every
#: thread's stack 100 times a second for a dashboard this cluster does not serve: measured,
#: two workers sampling side by side 1.13-1.21 s with it, 1.09-1.15 s without).
LOCAL_CLUSTER_CONFIG = {"distributed.scheduler.allowed-failures": 0,
                        "distributed.worker.profile.enabled": False}


def run_step(serialized_args: str) -> None:
    """In a dask worker: run one step of a run, its events written to the run's event log."""
    from dagster._cli.api import _execute_step_command_body
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes import deserialize_value

    args = deserialize_value(serialized_args, ExecuteStepArgs)
    with dg.DagsterInstance.from_ref(args.instance_ref) as instance:
        run = instance.get_run_by_id(args.run_id)
        if run is None:
            raise RuntimeError(f"run {args.run_id} is not in the instance the step was given")
        for _ in _execute_step_command_body(args, instance, run):
            pass


def _step_key(context: StepHandlerContext) -> str:
    (key,) = context.execute_step_args.step_keys_to_execute
    return key


class DaskStepHandler(StepHandler):
    """Launches, checks and stops steps as dask tasks on ``client`` (set by the executor)."""

    def __init__(self):
        self.client = None
        self._futures = {}
        self._launches = itertools.count()

    @property
    def name(self) -> str:
        return "DaskStepHandler"

    def _free_worker(self) -> str | None:
        """A worker running no task. The executor launches a step as soon as it reads another's
        success, a moment before that task returns, so wait for its worker to free; None (dask
        places it) past the wait, e.g. on a cluster others keep busy."""
        deadline = time.monotonic() + FREE_WORKER_WAIT
        while True:
            busy = {w for w, keys in self.client.processing().items() if keys}
            free = sorted(set(self.client.scheduler_info()["workers"]) - busy)
            if free or time.monotonic() > deadline:
                return free[0] if free else None
            time.sleep(0.02)

    def launch_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        from dagster._serdes import serialize_value

        key = _step_key(step_handler_context)
        worker = self._free_worker()
        run_id = step_handler_context.execute_step_args.run_id
        self._futures[key] = self.client.submit(
            run_step, serialize_value(step_handler_context.execute_step_args),
            key=f"{key}-{run_id[:8]}-{next(self._launches)}", pure=False, retries=0,
            workers=[worker] if worker else None, allow_other_workers=True)
        yield DagsterEvent.step_worker_starting(
            step_handler_context.get_step_context(key),
            message=f"Launching step {key} on dask worker {worker or '(dask decides)'}.",
            metadata={"dask_worker": worker or ""})

    def check_step_health(self, step_handler_context: StepHandlerContext) -> CheckStepHealthResult:
        future = self._futures.get(_step_key(step_handler_context))
        if future is None:
            return CheckStepHealthResult.unhealthy("this executor did not launch it")
        if future.status == "error":
            return CheckStepHealthResult.unhealthy(f"its dask task failed: {future.exception()!r}")
        if future.status in ("cancelled", "lost"):
            return CheckStepHealthResult.unhealthy(f"its dask task was {future.status}")
        return CheckStepHealthResult.healthy()

    def terminate_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        """Restart the worker running the step (a running dask task cannot be cancelled)."""
        key = _step_key(step_handler_context)
        future = self._futures.pop(key, None)
        if future is not None and not future.done():
            workers = [w for w, keys in self.client.processing().items() if future.key in keys]
            future.cancel()
            if workers:
                self.client.restart_workers(workers)
        yield DagsterEvent.engine_event(step_handler_context.get_step_context(key),
                                        f"Stopped step {key} (its dask worker restarted).",
                                        EngineEventData())


class DaskStepExecutor(StepDelegatingExecutor):
    """Steps on the cluster at ``address``, or on a ``LocalCluster`` of ``workers`` processes
    (one thread each, ``preload`` imported first) started for the run."""

    def __init__(self, address: str | None, workers: int, preload: list[str]):
        super().__init__(DaskStepHandler(), retries=RetryMode.ENABLED, max_concurrent=workers,
                         sleep_seconds=POLL_SECONDS,
                         check_step_health_interval_seconds=HEALTH_SECONDS)
        self.address, self.workers, self.preload = address, workers, preload

    @contextlib.contextmanager
    def _client(self):
        import dask
        from dask.distributed import Client, LocalCluster

        if self.address:
            try:
                client = Client(self.address)
            except OSError as e:  # a scheduler that is not up, a wrong host or port
                raise InputError(f"setting scale.dask_address: no dask scheduler answers at "
                                 f"{self.address!r} ({e})") from e
            with client:
                yield client
            return
        with dask.config.set(LOCAL_CLUSTER_CONFIG):
            cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, preload=self.preload)
        with cluster, Client(cluster) as client:
            yield client

    def execute(self, plan_context, execution_plan):
        with self._client() as client:
            self._step_handler.client = client
            yield from super().execute(plan_context, execution_plan)


@dg.executor(name="dask", config_schema={
    "address": dg.Field(dg.Noneable(str), default_value=None,
                        description="a running scheduler (tcp://host:8786); none: a LocalCluster"),
    "workers": dg.Field(int, default_value=2, description="LocalCluster processes; steps at once"),
    "preload": dg.Field([str], default_value=[], description="modules each worker imports first"),
}, requirements=multiple_process_executor_requirements())
def dask_step_executor(init_context) -> DaskStepExecutor:
    """Round steps as dask tasks, launched by Dagster's step-delegating executor."""
    config = init_context.executor_config
    return DaskStepExecutor(config["address"], config["workers"], config["preload"])
