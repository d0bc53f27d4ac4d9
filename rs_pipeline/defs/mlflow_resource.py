"""The one place MLflow is reached: one MLflow run per round, the model registry and aliases."""

from __future__ import annotations

import logging
import os
from typing import Any

import dagster as dg

from rs_pipeline.defs.resources import dagster_home, resolve_config

POLICY_MODEL = "rs-policy"
PREFERENCE_MODEL = "rs-preference"
CHAMPION_ALIAS = "champion"
_PIP = ["torch", "transformers==5.24.0", "safetensors"]


class MlflowResource(dg.ConfigurableResource):
    """SQLite tracking inside the Dagster home by default; artifacts beside it."""

    tracking_uri: str | None = None
    experiment: str | None = None

    def _uri(self) -> str:
        return (self.tracking_uri or resolve_config().storage.mlflow_tracking_uri
                or f"sqlite:///{dagster_home() / 'mlflow.db'}")

    def _experiment_name(self) -> str:
        return self.experiment or resolve_config().storage.mlflow_experiment

    def client(self):
        import mlflow

        mlflow.set_tracking_uri(self._uri())
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        return mlflow.MlflowClient(self._uri())

    def _experiment_id(self, client) -> str:
        exp = client.get_experiment_by_name(self._experiment_name())
        if exp is not None:
            return exp.experiment_id
        local = self._uri().startswith("sqlite:///")
        location = (dagster_home() / "mlartifacts").as_uri() if local else None
        return client.create_experiment(self._experiment_name(), artifact_location=location)

    def round_run(self, round_key: str, dagster_run_id: str | None) -> str:
        """The MLflow run of ``round_key`` (created on first use), tagged with the Dagster run."""
        client = self.client()
        exp_id = self._experiment_id(client)
        found = client.search_runs([exp_id], filter_string=f"tags.round = '{round_key}'",
                                   max_results=1)
        run_id = found[0].info.run_id if found else client.create_run(
            exp_id, run_name=f"round-{round_key}", tags={"round": round_key}).info.run_id
        if dagster_run_id:
            client.set_tag(run_id, "dagster_run_id", dagster_run_id)
        return run_id

    def log_metrics(self, round_key: str, metrics: dict[str, Any],
                    dagster_run_id: str | None) -> str:
        """Log the numeric ``metrics`` (None skipped) to the round's run; returns its run id."""
        client = self.client()
        run_id = self.round_run(round_key, dagster_run_id)
        for name, value in metrics.items():
            if value is not None:
                client.log_metric(run_id, name, float(value))
        return run_id

    def run_url(self, run_id: str) -> str:
        client = self.client()
        exp_id = client.get_run(run_id).info.experiment_id
        return f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{run_id}"

    def log_checkpoint(self, round_key: str, record: dict[str, Any], model_name: str,
                       dagster_run_id: str | None) -> str:
        """Log a checkpoint folder with the transformers flavour and register it under
        ``model_name``; the version carries the model id and lineage as tags. Returns the
        version."""
        import mlflow
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        from rs_pipeline.modeling import load_tokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        client = self.client()
        existing = client.search_model_versions(f"name = '{model_name}' and tag.model_id = "
                                                f"'{record['id']}'")
        if existing:
            return existing[0].version
        is_policy = model_name == POLICY_MODEL
        cls = AutoModelForCausalLM if is_policy else AutoModelForSequenceClassification
        model = cls.from_pretrained(record["path"], local_files_only=True)
        tok = load_tokenizer(record["path"])
        run_id = self.round_run(round_key, dagster_run_id)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.transformers.log_model(
                {"model": model, "tokenizer": tok}, name="policy" if is_policy else "preference",
                task="text-generation" if is_policy else "text-classification",
                pip_requirements=_PIP, registered_model_name=model_name,
            )
        version = str(info.registered_model_version)
        tags = {"model_id": record["id"], "round": round_key}
        if is_policy:
            tags["policy_id"] = record["id"]
        for key in ("parent_policy_id", "sft_dataset_version", "parent_id"):
            if record.get(key):
                tags[key] = str(record[key])
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        return version

    def set_champion(self, version: str) -> None:
        self.client().set_registered_model_alias(POLICY_MODEL, CHAMPION_ALIAS, version)

    def champion(self) -> dict[str, str] | None:
        try:
            mv = self.client().get_model_version_by_alias(POLICY_MODEL, CHAMPION_ALIAS)
        except Exception:  # noqa: BLE001 - no model or alias yet
            return None
        return {"version": mv.version, **mv.tags}
