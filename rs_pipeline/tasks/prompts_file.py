"""A task over your own prompts: read from a Parquet or JSON-lines file with a ``prompt`` column
(text) or a ``messages`` column (a chat conversation, see ``inputs.check_prompts_file``)."""

from __future__ import annotations

from pathlib import Path

from rs_pipeline.errors import InputError
from rs_pipeline.inputs import check_prompts_file
from rs_pipeline.tasks.base import Task


def read_prompt_file(path: str | Path, quarantine: str = "drop") -> list[str]:
    """Prompts from ``path`` (``.parquet`` or ``.jsonl``); every bad row named (file, row,
    column) in one error."""
    check = check_prompts_file(path, quarantine)
    if check.problems:
        raise InputError(f"prompts file {path}: {len(check.problems)} problem(s):\n  "
                         + "\n  ".join(check.summary()))
    return [r["prompt"] for r in check.rows]


class PromptsFileTask(Task):
    """Prompts from a file; no verifier, so selection and the gate use the preference model."""

    name = "prompts_file"

    def __init__(self, path: str | Path, max_completion_chars: int = 64, quarantine: str = "drop"):
        self.path = Path(path)
        self.max_completion_chars = max_completion_chars
        self.quarantine = quarantine

    def prompts(self) -> list[str]:
        return read_prompt_file(self.path, self.quarantine)

    @property
    def has_verifier(self) -> bool:
        return False

    def verify(self, prompt: str, completion: str) -> float:
        raise InputError(f"task over {self.path} has no verifier")
