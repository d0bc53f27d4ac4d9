"""The one place MLflow is reached: one MLflow run per round, the model registry and aliases.

``storage.mlflow_tracking_uri`` empty: a SQLite store in the home; ``http://...``: a shared
``mlflow server`` (runs, registry and aliases there; the registered sources are the checkpoint
folders in the storage, e.g. ``s3://...``).

Every round's run is a child of one ``history`` run per experiment; each metric is logged on the
round's run and on the history run with ``step`` = the round number, so MLflow's own charts show
every metric per round. A checkpoint is registered once, as a model version whose source is the
checkpoint folder itself (no second copy); load it with ``from_pretrained`` on
``mlflow.artifacts.download_artifacts("models:/rs-policy@champion")``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.ids import round_number
from rs_pipeline.records import PolicyCheckpoint, PreferenceCheckpoint

POLICY_MODEL = "rs-policy"
PREFERENCE_MODEL = "rs-preference"
CHAMPION_ALIAS = "champion"
HISTORY_TAG = "rs_pipeline/history"


def metric_step(round_key: str) -> int:
    """The chart step of a round (``bootstrap`` is step 0)."""
    try:
        return round_number(round_key)
    except ValueError:
        return 0


class MlflowResource(dg.ConfigurableResource):
    """Tracking URI and experiment come from the run context (sqlite in the home by default)."""

    pipeline: PipelineResource
    _runs: dict = PrivateAttr(default_factory=dict)

    def client(self):
        import mlflow

        uri = self.pipeline.ctx.mlflow_tracking_uri
        if uri.startswith("sqlite:///"):
            create_store_atomically(Path(uri[len("sqlite:///"):]))
        mlflow.set_tracking_uri(uri)
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        # with a server, MLflow prints a "View run" link per finished run on stdout (which
        # would break e.g. `rs-pipeline lineage --json`): the runs' links are in asset metadata
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        return mlflow.MlflowClient(uri)

    def _experiment_id(self, client) -> str:
        ctx = self.pipeline.ctx
        exp = client.get_experiment_by_name(ctx.mlflow_experiment)
        if exp is not None:
            return exp.experiment_id
        local = ctx.mlflow_tracking_uri.startswith("sqlite:///")
        return client.create_experiment(ctx.mlflow_experiment, artifact_location=(
            (ctx.home / "mlartifacts").as_uri() if local else None))

    def _find_or_create(self, client, exp_id: str, tag: str, value: str, **create) -> str:
        found = client.search_runs([exp_id], filter_string=f"tags.`{tag}` = '{value}'",
                                   max_results=1)
        if found:
            return found[0].info.run_id
        return client.create_run(exp_id, tags={tag: value, **create.pop("tags", {})},
                                 **create).info.run_id

    def _history_run(self, client, exp_id: str) -> str:
        """The history run: a container for every round's metrics, never "running" (a run left
        RUNNING reads as a dead job in MLflow's UI); metrics are logged to it all the same."""
        run_id = self._find_or_create(client, exp_id, HISTORY_TAG, "1", run_name="rounds")
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FINISHED")
        return run_id

    def round_run(self, round_key: str, dagster_run_id: str | None) -> str:
        """The MLflow run of ``round_key`` (created on first use, under the history run),
        tagged with the Dagster run that last wrote to it."""
        cached = self._runs.get(round_key)
        if cached and cached[1] == dagster_run_id:
            return cached[0]
        client = self.client()
        exp_id = self._experiment_id(client)
        parent = self._history_run(client, exp_id)
        run_id = self._find_or_create(client, exp_id, "round", round_key,
                                      run_name=f"round-{round_key}",
                                      tags={"mlflow.parentRunId": parent})
        if dagster_run_id:
            client.set_tag(run_id, "dagster_run_id", dagster_run_id)
        self._runs[round_key] = (run_id, dagster_run_id)
        self._runs["__history__"] = (parent, None)
        return run_id

    def log_metrics(self, round_key: str, metrics: dict[str, Any],
                    dagster_run_id: str | None) -> str:
        """Log the numeric ``metrics`` (None skipped) on the round's run and the history run,
        at step = round number; returns the round's run id."""
        from mlflow.entities import Metric

        run_id = self.round_run(round_key, dagster_run_id)
        now, step = int(time.time() * 1000), metric_step(round_key)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        if batch:
            client = self.client()
            client.log_batch(run_id, metrics=batch)
            client.log_batch(self._runs["__history__"][0], metrics=batch)
        return run_id

    def note(self, round_key: str, tags: dict[str, str | None], dagster_run_id: str | None) -> None:
        """Record texts (tags) on the round's run, e.g. why a step skipped its work."""
        run_id = self.round_run(round_key, dagster_run_id)
        client = self.client()
        for key, value in tags.items():
            if value:
                client.set_tag(run_id, key, value[:5000])

    def finish_round(self, round_key: str, dagster_run_id: str | None) -> None:
        """Mark the round's run finished (the round reached its outcome)."""
        self.client().set_terminated(self.round_run(round_key, dagster_run_id), "FINISHED")

    def stop_running_rounds(self) -> list[str]:
        """Mark round runs still RUNNING as KILLED (called when no round is alive on the home;
        a resumed round finishes its run again). Returns the rounds marked."""
        ctx = self.pipeline.ctx
        local = ctx.mlflow_tracking_uri.startswith("sqlite:///")
        if local and not (ctx.home / "mlflow.db").exists():
            return []
        client = self.client()
        exp = client.get_experiment_by_name(ctx.mlflow_experiment)
        if exp is None:
            return []
        runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
        for run in runs:
            client.set_terminated(run.info.run_id, "KILLED")
        return [run.data.tags.get("round", run.info.run_id) for run in runs]

    def run_url(self, run_id: str) -> str:
        exp_id = self.client().get_run(run_id).info.experiment_id
        uri = self.pipeline.ctx.mlflow_tracking_uri
        ui = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        return f"{ui}/#/experiments/{exp_id}/runs/{run_id}"

    def register(self, round_key: str, record: PolicyCheckpoint | PreferenceCheckpoint,
                 dagster_run_id: str | None) -> str:
        """Register a checkpoint folder (once per content id) as a version of ``rs-policy`` or
        ``rs-preference``, tagged with its id and lineage. Returns the version."""
        name = POLICY_MODEL if isinstance(record, PolicyCheckpoint) else PREFERENCE_MODEL
        client = self.client()
        found = client.search_model_versions(f"name = '{name}' and tag.model_id = '{record.id}'")
        if found:
            return str(found[0].version)
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        tags = {"model_id": record.id, "round": round_key, "parent_id": record.parent_id,
                "lora": record.lora.summary() if record.lora else None}
        if isinstance(record, PolicyCheckpoint):
            tags["sft_dataset_version"] = record.sft_dataset_version
            tags["dpo_pairs_version"] = record.dpo_pairs_version
            tags["method"] = record.method if record.round else None
        else:
            tags["labels_version"] = record.labels_version
        version = client.create_model_version(
            name, source=self.pipeline.ctx.checkpoints.uri(record.path),
            run_id=self.round_run(round_key, dagster_run_id),
            tags={k: str(v) for k, v in tags.items() if v})
        return str(version.version)

    def registered(self, round_key: str, record, dagster_run_id: str | None):
        """``record`` with its registry version filled in (registering it if new)."""
        return dataclasses.replace(record, mlflow_version=self.register(round_key, record,
                                                                        dagster_run_id))

    def set_champion(self, version: str) -> None:
        self.client().set_registered_model_alias(POLICY_MODEL, CHAMPION_ALIAS, version)

    def champion(self) -> dict[str, str] | None:
        try:
            mv = self.client().get_model_version_by_alias(POLICY_MODEL, CHAMPION_ALIAS)
        except Exception:  # noqa: BLE001 - no model or alias yet
            return None
        return {"version": mv.version, **mv.tags}


def create_store_atomically(db: Path) -> None:
    """Create a local MLflow SQLite store (its schema migrations take seconds) in a temporary
    file moved into place when complete: a kill during creation leaves no half-migrated store
    that every later run would fail to open. Leftovers of such a kill are removed."""
    import mlflow

    if not db.exists():
        tmp = db.with_name(f"{db.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            mlflow.MlflowClient(f"sqlite:///{tmp}").search_experiments(max_results=1)
            os.replace(tmp, db)
        finally:
            tmp.unlink(missing_ok=True)
    for stale in db.parent.glob(f"{db.name}.tmp-*"):
        stale.unlink(missing_ok=True)
