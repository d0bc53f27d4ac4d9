"""The demo's annotator: the task's verifier plus label noise, standing in for people."""

from __future__ import annotations

from collections.abc import Sequence

from rs_pipeline.annotators.base import Label, Pair
from rs_pipeline.errors import InputError
from rs_pipeline.ids import seeded_rng
from rs_pipeline.tasks.base import Task


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
        self.annotator_id = f"simulated:noise={label_noise}"

    def label(self, pairs: Sequence[Pair], salt: str = "") -> list[Label | None]:
        rng = seeded_rng(self.seed, salt)
        labels: list[Label | None] = []
        for prompt, a, b in pairs:
            sa, sb = self.task.verify(prompt, a), self.task.verify(prompt, b)
            hp = 0.5 if sa == sb else float(sa > sb)
            if hp != 0.5 and rng.random() < self.label_noise:
                hp = 1.0 - hp
            labels.append(Label(hp, self.annotator_id))
        return labels
