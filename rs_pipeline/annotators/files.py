"""Labels read from a judgements file made beforehand (people, another tool)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rs_pipeline.annotators.base import Label, Pair
from rs_pipeline.errors import InputError
from rs_pipeline.ids import file_version
from rs_pipeline.inputs import check_judgements_file


class FileAnnotator:
    """Human judgements from Parquet or JSONL: ``prompt``, ``completion_a``, ``completion_b``,
    ``hp`` (checked row by row: ``inputs.check_judgements_file``).

    A pair the file does not cover (in either order) gets ``None`` and is left out.
    """

    source = "file"

    def __init__(self, path: str | Path, quarantine: str = "drop"):
        self.path = Path(path)
        check = check_judgements_file(self.path, quarantine)
        if check.problems:
            raise InputError(f"labels file {self.path}: {len(check.problems)} problem(s):\n  "
                             + "\n  ".join(check.summary()))
        self.quarantined = check.quarantined
        self.version = file_version(self.path)
        self._labels = {(r["prompt"], r["completion_a"], r["completion_b"]): Label(
            r["hp"], r.get("annotator_id") or f"file:{self.path.name}",
            f"{self.path}@{self.version}", r.get("labelled_at")) for r in check.rows}

    def label(self, pairs: Sequence[Pair], salt: str = "") -> list[Label | None]:
        out: list[Label | None] = []
        for prompt, a, b in pairs:
            if (prompt, a, b) in self._labels:
                out.append(self._labels[(prompt, a, b)])
            elif (prompt, b, a) in self._labels:
                out.append(self._labels[(prompt, b, a)].flipped())
            else:
                out.append(None)
        return out

    def all_pairs(self) -> list[tuple[Pair, Label]]:
        return list(self._labels.items())
