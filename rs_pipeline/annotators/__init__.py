"""Annotators: who labels a pair of completions with a soft preference ``hp`` in [0, 1].

``simulated`` (the task's verifier plus noise: the demo) and ``file`` (judgements made
beforehand) are here; every kind yields ``base.Label`` rows with their provenance.
"""

from __future__ import annotations

from rs_pipeline.annotators.base import Annotator, Label, Pair, hps, label_columns
from rs_pipeline.annotators.files import FileAnnotator
from rs_pipeline.annotators.human import HumanAnnotator
from rs_pipeline.annotators.simulated import SimulatedAnnotator
from rs_pipeline.errors import InputError
from rs_pipeline.tasks.base import Task

__all__ = ["Annotator", "FileAnnotator", "HumanAnnotator", "Label", "Pair", "SimulatedAnnotator", "hps",
           "label_columns", "make_annotator"]


def make_annotator(kind: str, task: Task, label_noise: float, seed: int, path: str | None,
                   quarantine: str = "drop", inbox: str | None = None,
                   wait_hours: float = 24.0) -> Annotator:
    """The annotator the config names (``inbox``, ``wait_hours``: the human annotator's)."""
    if kind == "human":
        if not inbox:
            raise InputError("setting annotator.inbox is required when annotator.kind is 'human'")
        return HumanAnnotator(inbox, wait_hours, quarantine)
    if kind == "simulated":
        return SimulatedAnnotator(task, label_noise, seed)
    if kind == "file":
        if not path:
            raise InputError("setting annotator.path is required when annotator.kind is 'file'")
        return FileAnnotator(path, quarantine)
    raise InputError(f"setting annotator.kind: unknown kind {kind!r} (known: simulated, file, human)")
