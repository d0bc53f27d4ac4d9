"""Annotators: label a pair of completions with a soft preference ``hp`` in [0, 1].

``hp`` is the probability that completion A is preferred to completion B. A simulated annotator
(the task's verifier plus label noise) stands in for people in the demo; a Parquet file of human
judgements is another source with the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rs_pipeline.errors import InputError
from rs_pipeline.ids import seeded_rng
from rs_pipeline.inputs import check_judgements_file
from rs_pipeline.tasks.base import Task

Pair = tuple[str, str, str]  # (prompt, completion_a, completion_b)


class SimulatedAnnotator:
    """Verifier-backed labels: 1 if A is right and B wrong, 0 the other way, 0.5 for a tie.

    With probability ``label_noise`` a decided label is flipped, as a tired human would.
    """

    source = "simulated"

    def __init__(self, task: Task, label_noise: float = 0.1, seed: int = 0):
        if not task.has_verifier:
            raise InputError(
                f"setting annotator.kind='simulated' needs a task with a verifier; task "
                f"{task.name!r} has none: use annotator.kind='file'"
            )
        if not 0.0 <= label_noise <= 0.5:
            raise InputError(f"setting annotator.label_noise={label_noise} must be in [0, 0.5]")
        self.task, self.label_noise, self.seed = task, label_noise, seed

    def label(self, pairs: Sequence[Pair], salt: str = "") -> list[float | None]:
        rng = seeded_rng(self.seed, salt)
        labels: list[float | None] = []
        for prompt, a, b in pairs:
            sa, sb = self.task.verify(prompt, a), self.task.verify(prompt, b)
            hp = 0.5 if sa == sb else float(sa > sb)
            if hp != 0.5 and rng.random() < self.label_noise:
                hp = 1.0 - hp
            labels.append(hp)
        return labels


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
        self._labels = {(r["prompt"], r["completion_a"], r["completion_b"]): r["hp"]
                        for r in check.rows}

    def label(self, pairs: Sequence[Pair], salt: str = "") -> list[float | None]:
        out: list[float | None] = []
        for prompt, a, b in pairs:
            if (prompt, a, b) in self._labels:
                out.append(self._labels[(prompt, a, b)])
            elif (prompt, b, a) in self._labels:
                out.append(1.0 - self._labels[(prompt, b, a)])
            else:
                out.append(None)
        return out

    def all_pairs(self) -> list[tuple[str, str, str, float]]:
        return [(p, a, b, hp) for (p, a, b), hp in self._labels.items()]


def make_annotator(kind: str, task: Task, label_noise: float, seed: int, path: str | None,
                   quarantine: str = "drop"):
    """The annotator the config names (``simulated`` or ``file``)."""
    if kind == "simulated":
        return SimulatedAnnotator(task, label_noise, seed)
    if kind == "file":
        if not path:
            raise InputError("setting annotator.path is required when annotator.kind is 'file'")
        return FileAnnotator(path, quarantine)
    raise InputError(f"setting annotator.kind: unknown kind {kind!r} (known: simulated, file)")
