"""What every annotator yields: a soft label ``hp`` in [0, 1] per pair, with its provenance.

``hp`` is the probability that completion A is preferred to completion B. ``annotator_id`` says
who labelled (``simulated:noise=0.1``, a reward model's or judge's content id, a person's name);
``source`` the version of the file a label came from; ``labelled_at`` when a person labelled it
(None for machine labels, which are reproducible and carry no time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Pair = tuple[str, str, str]  # (prompt, completion_a, completion_b)


@dataclass(frozen=True)
class Label:
    hp: float
    annotator_id: str
    source: str | None = None
    labelled_at: str | None = None

    def flipped(self) -> Label:
        """The same judgement of the pair read the other way round (B, A)."""
        return Label(1.0 - self.hp, self.annotator_id, self.source, self.labelled_at)


class Annotator(Protocol):
    source: str  # the kind: simulated, file, reward_model, judge, human, mixed

    def label(self, pairs: Sequence[Pair], salt: str = "") -> list[Label | None]:
        """One label per pair; None for a pair this annotator does not (yet) label."""


def hps(labels: Sequence[Label | None]) -> list[float | None]:
    return [None if lab is None else lab.hp for lab in labels]


def label_columns(labels: Sequence[Label], kind: str) -> dict[str, list]:
    """The label and provenance columns of a labelled-pairs table (``schemas``)."""
    return {"hp": [lab.hp for lab in labels], "annotator": [kind] * len(labels),
            "annotator_id": [lab.annotator_id for lab in labels],
            "label_source": [lab.source for lab in labels],
            "labelled_at": [lab.labelled_at for lab in labels]}
