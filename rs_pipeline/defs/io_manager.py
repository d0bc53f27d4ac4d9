"""Parquet IO manager: Arrow tables as schema-checked Parquet, small records as JSON.

Model checkpoints never pass through here: assets return a record (path, id, lineage) and the
checkpoint store owns the folders.
"""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from rs_pipeline.config import PipelineConfig
from rs_pipeline.defs.resources import dagster_home, resolve_config
from rs_pipeline.schemas import SCHEMAS
from rs_pipeline.storage import AssetStore


def asset_store(base_uri: str | None = None, settings: PipelineConfig | None = None) -> AssetStore:
    """The asset store: ``base_uri``, else the settings' ``storage.base_uri``, else
    ``$DAGSTER_HOME/storage``."""
    settings = settings or resolve_config()
    return AssetStore(base_uri or settings.storage.base_uri or str(dagster_home() / "storage"))


class ParquetIOManager(dg.ConfigurableIOManager):
    """Files under ``base_uri`` (a path or fsspec URI); empty: ``$DAGSTER_HOME/storage``."""

    base_uri: str | None = None

    def _store(self) -> AssetStore:
        return asset_store(self.base_uri)

    @staticmethod
    def _name_and_partition(context) -> tuple[str, str | None]:
        name = context.asset_key.path[-1]
        return name, context.asset_partition_key if context.has_asset_partitions else None

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        name, partition = self._name_and_partition(context)
        store = self._store()
        if isinstance(obj, pa.Table):
            path = store.write_table(name, obj, partition)
        elif isinstance(obj, dict):
            path = store.write_json(name, obj, partition)
        else:
            raise TypeError(f"asset {name!r} returned {type(obj).__name__}; expected an Arrow "
                            "table or a record dict")
        context.add_output_metadata({"path": dg.MetadataValue.path(store.uri(path))})

    def load_input(self, context: dg.InputContext):
        name, partition = self._name_and_partition(context)
        store = self._store()
        if name in SCHEMAS:
            return store.read_table(name, partition)
        return store.read_json(name, partition)
