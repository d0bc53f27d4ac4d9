"""A task over your own prompts: read from a Parquet or JSON-lines file with a ``prompt`` column."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from rs_pipeline.errors import InputError
from rs_pipeline.tasks.base import Task


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from ``path`` (``.parquet`` or ``.jsonl``); one clear error per bad file, row, column."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"prompts file {path} does not exist")
    try:
        table = pq.read_table(path) if path.suffix == ".parquet" else pajson.read_json(path)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise InputError(f"prompts file {path} cannot be read: {exc}") from exc
    if "prompt" not in table.column_names:
        raise InputError(
            f"prompts file {path} has no column 'prompt' (columns: {table.column_names})"
        )
    col = table.column("prompt")
    bad = pc.or_(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(col.cast("string")), ""))
    idx = pc.index(bad, True).as_py()
    if idx >= 0:
        raise InputError(f"prompts file {path}, row {idx}, column 'prompt': empty or missing prompt")
    return [str(p) for p in col.to_pylist()]


class PromptsFileTask(Task):
    """Prompts from a file; no verifier, so selection and the gate use the preference model."""

    name = "prompts_file"

    def __init__(self, path: str | Path, max_completion_chars: int = 64):
        self.path = Path(path)
        self.max_completion_chars = max_completion_chars

    def prompts(self) -> list[str]:
        return read_prompt_file(self.path)

    @property
    def has_verifier(self) -> bool:
        return False

    def verify(self, prompt: str, completion: str) -> float:
        raise InputError(f"task over {self.path} has no verifier")
