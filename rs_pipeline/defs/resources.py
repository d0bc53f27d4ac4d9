"""The pipeline resource: settings, asset store, checkpoint store and task, resolved from the home.

Everything a run writes follows ``DAGSTER_HOME``: another home is another complete history.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import dagster as dg

from rs_pipeline.annotation import make_annotator
from rs_pipeline.checkpoints import CheckpointStore
from rs_pipeline.config import PipelineConfig, config_from_dict, load_config
from rs_pipeline.generation import SamplingParams
from rs_pipeline.storage import AssetStore
from rs_pipeline.tasks import Task, get_task

CONFIG_FILE_NAME = "rs_pipeline.yaml"


def dagster_home() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    return Path(home).resolve() if home else Path("dagster_home").resolve()


def resolve_config(config_file: str | None = None) -> PipelineConfig:
    """``config_file``, else ``$RS_PIPELINE_CONFIG``, else ``$DAGSTER_HOME/rs_pipeline.yaml``,
    else the defaults (the rev8 demo)."""
    path = config_file or os.environ.get("RS_PIPELINE_CONFIG")
    if path:
        return load_config(path)
    home_file = dagster_home() / CONFIG_FILE_NAME
    return load_config(home_file) if home_file.exists() else config_from_dict({})


class PipelineResource(dg.ConfigurableResource):
    """Settings and stores for the rejection-sampling loop."""

    config_file: str | None = None

    @cached_property
    def settings(self) -> PipelineConfig:
        return resolve_config(self.config_file)

    @property
    def home(self) -> Path:
        return dagster_home()

    @cached_property
    def store(self) -> AssetStore:
        from rs_pipeline.defs.io_manager import asset_store

        return asset_store(settings=self.settings)

    @cached_property
    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(self.home / "checkpoints")

    @cached_property
    def task(self) -> Task:
        return get_task(self.settings.task.name, self.settings.task.prompts_path)

    def annotator(self):
        a = self.settings.annotator
        return make_annotator(a.kind, self.task, a.label_noise, self.settings.seed, a.path)

    def sampling_params(self) -> SamplingParams:
        g = self.settings.generation
        max_new = g.max_new_tokens or self.task.max_completion_chars + 1
        return SamplingParams(n=g.n, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
                              max_new_tokens=max_new)
