"""Parquet IO manager: Arrow tables as schema-checked Parquet, typed records as JSON.

Model checkpoints never pass through here: assets return a record (path, id, lineage) and the
checkpoint store owns the folders.
"""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.records import RECORD_TYPES
from rs_pipeline.schemas import SCHEMAS


class ParquetIOManager(dg.ConfigurableIOManager):
    """Files under the run context's storage base (a path or fsspec URI)."""

    pipeline: PipelineResource

    @staticmethod
    def _name_and_partition(context) -> tuple[str, str | None]:
        name = context.asset_key.path[-1]
        return name, context.asset_partition_key if context.has_asset_partitions else None

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        name, partition = self._name_and_partition(context)
        store = self.pipeline.ctx.store
        if isinstance(obj, pa.Table):
            path = store.write_table(name, obj, partition)
        elif name in RECORD_TYPES:
            path = store.write_record(name, obj, partition)
        else:
            raise TypeError(f"asset {name!r} returned {type(obj).__name__}; expected an Arrow "
                            "table or one of rs_pipeline.records")
        context.add_output_metadata({"path": dg.MetadataValue.path(store.uri(path))})

    def load_input(self, context: dg.InputContext):
        name, partition = self._name_and_partition(context)
        store = self.pipeline.ctx.store
        if name in SCHEMAS:
            return store.read_table(name, partition)
        return store.read_record(name, partition)
