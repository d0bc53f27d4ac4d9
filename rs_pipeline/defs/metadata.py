"""What an asset records: its output with data version, preview, metrics (also sent to MLflow)
and lineage ids. Keeps the asset bodies to a few lines."""

from __future__ import annotations

import base64
from typing import Any

import dagster as dg
import pyarrow as pa

from rs_pipeline.ids import config_hash, table_version
from rs_pipeline.records import to_dict
from rs_pipeline.report import png_bytes


def preview(table: pa.Table, rows: int = 8, max_chars: int = 40) -> dg.MetadataValue:
    """The first ``rows`` rows as a Markdown table (long cells cut)."""
    head = table.slice(0, rows).to_pylist()
    cols = table.column_names

    def cell(v: Any) -> str:
        s = f"{v:.4g}" if isinstance(v, float) else str(v)
        s = s.replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in head]
    return dg.MetadataValue.md("\n".join(lines))


def numeric(values: dict[str, Any]) -> dict[str, Any]:
    """Metadata-friendly copy: floats rounded, None dropped."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()
            if v is not None}


def distinct_ids(table: pa.Table, *columns: str) -> dict[str, str]:
    """The ids behind a table's rows (one per round in practice), comma-joined per column."""
    return {c: ",".join(sorted(set(table.column(c).to_pylist()))) for c in columns
            if c in table.column_names}


def picture(fig, alt: str) -> dg.MetadataValue:
    """A matplotlib figure as an inline PNG (the UI shows it under "Show Markdown")."""
    data = base64.b64encode(png_bytes(fig)).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def data_version(value: Any) -> str:
    if isinstance(value, pa.Table):
        return table_version(value)
    return getattr(value, "id", None) or config_hash(to_dict(value))


def output(context, mlflow, value: Any, metrics: dict[str, Any] | None = None,
           output_name: str = "result", **meta: Any) -> dg.Output:
    """``value`` as the asset's output: data version, preview and row count for tables,
    ``metrics`` logged to the round's MLflow run (and shown with a link), extra metadata."""
    key = context.partition_key if context.has_partition_key else "bootstrap"
    md: dict[str, Any] = {}
    if isinstance(value, pa.Table):
        md.update({"dagster/row_count": value.num_rows, "preview": preview(value)})
        md.update(distinct_ids(value, "policy_id", "reward_model_id"))
    if metrics:
        run_id = mlflow.log_metrics(key, metrics, context.run_id)
        md.update({**numeric(metrics), "mlflow_run_id": run_id,
                   "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run_id))})
    md.update(numeric(meta))
    return dg.Output(value, output_name, data_version=dg.DataVersion(data_version(value)),
                     metadata=md)
