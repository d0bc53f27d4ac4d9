"""The pipeline resource: the Dagster face of the core run context.

Everything a run writes follows ``DAGSTER_HOME``: another home is another complete history.
The IO manager and the MLflow resource reach settings and stores only through this resource.
"""

from __future__ import annotations

import dagster as dg

from rs_pipeline.context import RunContext, load_context


class PipelineResource(dg.ConfigurableResource):
    """Settings and stores for the rejection-sampling loop (``rs_pipeline.context``)."""

    config_file: str | None = None

    @property
    def ctx(self) -> RunContext:
        """The run context for ``$DAGSTER_HOME``: built once per settings content, validated."""
        return load_context(config_file=self.config_file)
