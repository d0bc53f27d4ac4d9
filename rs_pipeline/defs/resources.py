"""The pipeline resource: the Dagster face of the core run context.

Everything a run writes follows ``DAGSTER_HOME``: another home is another complete history.
The IO manager and the MLflow resource reach settings and stores only through this resource.

Every run, however launched (CLI, UI, schedule), holds the home's lock while it executes: a run
that starts while another runs on the same home fails at once with a clear message. The run that
takes the lock first repairs what dead runs left (``recovery``) and checks its inputs
(``preflight``) before any step does model work.
"""

from __future__ import annotations

import contextlib

import dagster as dg

from rs_pipeline.context import RunContext, load_context
from rs_pipeline.home_lock import holds_lock, home_lock, joined, lock_token

#: The token of the home lock a run's launcher holds, passed to the run's step processes.
LOCK_TOKEN_TAG = "rs_pipeline/lock_token"

_checked: set[int] = set()  # contexts already preflighted in this process


def preflight_once(ctx: RunContext) -> None:
    """``preflight.require`` once per context and process (the CLI checks before launching)."""
    from rs_pipeline.preflight import require

    if id(ctx) not in _checked:
        require(ctx)
        _checked.add(id(ctx))


def lock_tags(home) -> dict[str, str]:
    """The run tag that lets the step processes of a run this process launches join its hold of
    the home lock (empty if it holds none)."""
    token = lock_token(home)
    return {LOCK_TOKEN_TAG: token} if token else {}


class PipelineResource(dg.ConfigurableResource):
    """Settings and stores for the rejection-sampling loop (``rs_pipeline.context``)."""

    config_file: str | None = None

    @property
    def ctx(self) -> RunContext:
        """The run context for ``$DAGSTER_HOME``: built once per settings content, validated."""
        return load_context(config_file=self.config_file)

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        from rs_pipeline.defs.mlflow_resource import MlflowResource
        from rs_pipeline.defs.recovery import recover

        ctx = self.ctx
        run_id = context.run_id or ""
        first = not holds_lock(ctx.home)
        tags = context.dagster_run.tags if context.dagster_run is not None else {}
        # steps in other processes (multiprocess/dask executors) join their run's hold
        with home_lock(ctx.home, f"run {run_id}", token=tags.get(LOCK_TOKEN_TAG) or run_id):
            threads = ctx.settings.scale.torch_threads
            if threads:
                import torch

                torch.set_num_threads(threads)
            first = first and not joined(ctx.home)
            if first and context.instance is not None:
                mlflow = MlflowResource(pipeline=self)
                for line in recover(context.instance, ctx, current_run_id=run_id, mlflow=mlflow):
                    context.log.warning(line)
            preflight_once(ctx)
            yield self
