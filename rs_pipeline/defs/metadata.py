"""Asset metadata helpers: preview tables, metric dicts, links."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa


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


def table_metadata(table: pa.Table, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"dagster/row_count": table.num_rows, "preview": preview(table)}
    meta.update(numeric(extra))
    return meta


def numeric(values: dict[str, Any]) -> dict[str, Any]:
    """Metadata-friendly copy: floats rounded, None dropped."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()
            if v is not None}


def distinct_ids(table: pa.Table, *columns: str) -> dict[str, str]:
    """The ids behind a table's rows (one per round in practice), comma-joined per column."""
    return {c: ",".join(sorted(set(table.column(c).to_pylist()))) for c in columns}


def picture(fig, alt: str) -> dg.MetadataValue:
    """A matplotlib figure as an inline PNG the UI renders."""
    import base64

    from rs_pipeline.report import png_bytes

    data = base64.b64encode(png_bytes(fig)).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def mlflow_link(url: str) -> dict[str, Any]:
    return {"mlflow_run": dg.MetadataValue.url(url)}


def track(context, mlflow, round_key: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Log ``metrics`` to the round's MLflow run; return asset metadata with them and the link."""
    run_id = mlflow.log_metrics(round_key, metrics, context.run_id)
    return {**numeric(metrics), "mlflow_run_id": run_id, **mlflow_link(mlflow.run_url(run_id))}
