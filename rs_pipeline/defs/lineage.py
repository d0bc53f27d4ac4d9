"""Lineage answers, assembled from three sources that must agree: the Dagster event log,
the rows' own columns (and the stored records), and MLflow's registry tags.

- ``policy_lineage``: a checkpoint (``pol-…`` id, round key or ``rs-policy:VERSION``) -> the
  table(s) and round that trained it (``trained_on``: the SFT set, the DPO pairs, or both, by
  its ``method``), its parent chain down to the base policy, the rounds that
  sampled from it.
- ``data_lineage``: an asset partition (optionally one row by prompt or generation id) -> the
  policy that produced it, the preference model that scored it, and that policy's chain.

A home pointed at storage that another home wrote (a shared bucket) has no Dagster events for the
rounds it did not run: for those the answer comes from the records and MLflow, and names the
Dagster source in ``absent_sources`` instead of counting it as a disagreement.
"""

from __future__ import annotations

from functools import cached_property

import dagster as dg
import pyarrow.compute as pc

from rs_pipeline.defs.mlflow_resource import POLICY_MODEL, PREFERENCE_MODEL, MlflowResource
from rs_pipeline.defs.partitions import round_number
from rs_pipeline.errors import InputError
from rs_pipeline.records import PolicyCheckpoint
from rs_pipeline.schemas import SCHEMAS
from rs_pipeline.storage import AssetStore


def _event(instance: dg.DagsterInstance, asset: str, partition: str | None):
    flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                                asset_partitions=[partition] if partition else None)
    records = instance.fetch_materializations(flt, limit=1).records
    return records[0] if records else None


def _meta(record, name: str):
    if record is None:
        return None
    value = record.asset_materialization.metadata.get(name)
    return None if value is None else value.value


class Lineage:
    def __init__(self, instance: dg.DagsterInstance, store: AssetStore, mlflow: MlflowResource):
        self.instance, self.store, self.mlflow = instance, store, mlflow
        self._client = mlflow.client()

    # --- checkpoints -------------------------------------------------------------------
    @cached_property
    def _checkpoints(self) -> dict[str, PolicyCheckpoint]:
        """Every policy record by id: the base policy and each round's candidate."""
        out = {}
        if self.store.exists("base_policy", None, "json"):
            base = self.store.read_record("base_policy")
            out[base.id] = base
        for key in self.store.partitions("policy_checkpoint", "json"):
            rec = self.store.read_record("policy_checkpoint", key)
            out[rec.id] = rec
        return out

    def _mlflow_version(self, name: str, model_id: str) -> dict | None:
        found = self._client.search_model_versions(f"name = '{name}' and tag.model_id = '{model_id}'")
        return {"version": found[0].version, **found[0].tags} if found else None

    def resolve_policy(self, ref: str) -> str:
        if ref.startswith(f"{POLICY_MODEL}:"):
            version = ref.split(":", 1)[1]
            try:
                return self._client.get_model_version(POLICY_MODEL, version).tags["model_id"]
            except Exception:  # noqa: BLE001 - re-raised as a clear message
                raise InputError(f"no {POLICY_MODEL} version {version!r} in MLflow") from None
        if ref.startswith("r") and ref[1:].isdigit():
            if not self.store.exists("policy_checkpoint", ref, "json"):
                raise InputError(f"round {ref} has no policy_checkpoint")
            return self.store.read_record("policy_checkpoint", ref).id
        return ref

    def ancestors(self, policy_id: str) -> list[str]:
        checkpoints, chain, cur = self._checkpoints, [], policy_id
        while cur and cur in checkpoints and checkpoints[cur].parent_id:
            cur = checkpoints[cur].parent_id
            chain.append(cur)
        return chain

    def policy_lineage(self, ref: str) -> dict:
        policy_id = self.resolve_policy(ref)
        checkpoints = self._checkpoints
        if policy_id not in checkpoints:
            raise InputError(f"no checkpoint {policy_id!r} in this home")
        rec = checkpoints[policy_id]
        key = rec.round
        sampled_by = [k for k in self.store.partitions("sampling_policy", "json")
                      if self.store.read_record("sampling_policy", k).checkpoint.id == policy_id]
        event = _event(self.instance, "policy_checkpoint" if key else "base_policy", key)
        tables = {"sft_dataset": rec.sft_dataset_version, "dpo_pairs": rec.dpo_pairs_version}
        trained_on = {a: v for a, v in tables.items() if key and v}
        table_events = {a: _event(self.instance, a, key) for a in trained_on}
        mlv = self._mlflow_version(POLICY_MODEL, policy_id)
        sources = {
            "record": {"policy_id": rec.id, "parent_policy_id": rec.parent_id,
                       "sft_dataset_version": rec.sft_dataset_version,
                       "dpo_pairs_version": rec.dpo_pairs_version},
            "dagster": {"policy_id": _meta(event, "policy_id"),
                        "parent_policy_id": _meta(event, "parent_policy_id"),
                        "sft_dataset_version": _meta(event, "sft_dataset_version"),
                        "dpo_pairs_version": _meta(event, "dpo_pairs_version"),
                        **{f"{a}_data_version": (e.asset_materialization.tags or {})
                           .get("dagster/data_version") if e else None
                           for a, e in table_events.items()}},
            "mlflow": {"policy_id": (mlv or {}).get("model_id"),
                       "parent_policy_id": (mlv or {}).get("parent_id"),
                       "sft_dataset_version": (mlv or {}).get("sft_dataset_version"),
                       "dpo_pairs_version": (mlv or {}).get("dpo_pairs_version")},
        }
        return {
            "policy_id": policy_id, "parent_policy_id": rec.parent_id, "round": key,
            "method": rec.method if key else None,
            "sft_dataset_version": rec.sft_dataset_version,
            "lora": rec.lora.summary() if rec.lora else None,
            "trained_on": [{"asset": a, "round": key, "version": v}
                           for a, v in trained_on.items()],
            "sft_dataset": {"asset": "sft_dataset", "round": key, "version": v}
            if (v := trained_on.get("sft_dataset")) else None,
            "dpo_pairs": {"asset": "dpo_pairs", "round": key, "version": v, "rows": rec.dpo_pairs}
            if (v := trained_on.get("dpo_pairs")) else None,
            "note": rec.note,
            "promoted": bool(key and self.store.exists("promotion", key, "json")) or key is None,
            "mlflow_version": (mlv or {}).get("version"), "ancestors": self.ancestors(policy_id),
            "sampled_by_rounds": sampled_by, **_without_absent(sources, event),
            "consistent": _agree(_without_absent(sources, event)["sources"],
                                 ["policy_id", "parent_policy_id", "sft_dataset_version",
                                  "dpo_pairs_version"])
            and (event is None or all(sources["dagster"][f"{a}_data_version"] == v
                                      for a, v in trained_on.items())),
        }

    # --- data --------------------------------------------------------------------------
    def data_lineage(self, asset: str, round_key: str, prompt_id: str | None = None,
                     generation_id: str | None = None) -> dict:
        if asset not in SCHEMAS or "policy_id" not in SCHEMAS[asset].names:
            known = [a for a, s in SCHEMAS.items() if "policy_id" in s.names]
            raise InputError(f"asset {asset!r} carries no policy lineage (try one of {known})")
        round_number(round_key)
        if not self.store.exists(asset, round_key):
            raise InputError(f"asset {asset!r} has no partition {round_key!r} in this home")
        table = self.store.read_table(asset, round_key)
        for col, value in (("prompt_id", prompt_id), ("generation_id", generation_id)):
            if value is not None:
                if col not in table.column_names:
                    raise InputError(f"asset {asset!r} has no column {col!r}")
                table = table.filter(pc.equal(table.column(col), value))
                if table.num_rows == 0:
                    raise InputError(f"no row of {asset} {round_key} has {col} = {value!r}")
        policies = sorted(set(table.column("policy_id").to_pylist()))
        rms = (sorted(set(table.column("reward_model_id").to_pylist()))
               if "reward_model_id" in table.column_names else [])
        sampled = self.store.read_record("sampling_policy", round_key).checkpoint
        event = _event(self.instance, asset, round_key)
        pol_v = self._mlflow_version(POLICY_MODEL, policies[0]) if len(policies) == 1 else None
        rm_v = self._mlflow_version(PREFERENCE_MODEL, rms[0]) if len(rms) == 1 else None
        sources = {
            "rows": {"policy_id": policies[0] if len(policies) == 1 else policies,
                     "reward_model_id": (rms[0] if len(rms) == 1 else rms) or None},
            "dagster": {"policy_id": _meta(event, "policy_id") or sampled.id,
                        "reward_model_id": _meta(event, "reward_model_id") if rms else None},
            "mlflow": {"policy_id": (pol_v or {}).get("model_id"),
                       "reward_model_id": (rm_v or {}).get("model_id") if rms else None},
        }
        pid = sources["rows"]["policy_id"]
        return {
            "asset": asset, "round": round_key, "prompt_id": prompt_id,
            "generation_id": generation_id, "rows": table.num_rows, "policy_id": pid,
            "reward_model_id": sources["rows"]["reward_model_id"],
            "policy_mlflow_version": (pol_v or {}).get("version"),
            "reward_model_mlflow_version": (rm_v or {}).get("version"),
            "policy_ancestors": self.ancestors(pid) if isinstance(pid, str) else [],
            **_without_absent(sources, event),
            "consistent": _agree(_without_absent(sources, event)["sources"],
                                 ["policy_id", "reward_model_id"]),
        }


def _without_absent(sources: dict, event) -> dict:
    """``{"sources": ...}``, without the Dagster source when this home has no event for the
    partition (it was written by another home sharing the storage), named in
    ``absent_sources``."""
    if event is not None:
        return {"sources": sources}
    return {"sources": {k: v for k, v in sources.items() if k != "dagster"},
            "absent_sources": ["dagster"]}


def _agree(sources: dict, fields: list[str]) -> bool:
    return all(len({str(s.get(f)) for s in sources.values()}) == 1 for f in fields)


def render(answer: dict) -> str:
    """A readable two-column table of a lineage answer."""
    rows = [(k, v) for k, v in answer.items() if k != "sources"]
    rows += [(f"{src}.{k}", v) for src, vals in answer["sources"].items() for k, v in vals.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {'-' if v in (None, [], '') else v}" for k, v in rows)
