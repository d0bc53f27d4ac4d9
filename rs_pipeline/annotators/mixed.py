"""Labels mixed from several annotators: a weighted average of the soft labels of the sources
that labelled a pair (``annotator.mix``, e.g. ``simulated=0.5,reward_model=0.5``)."""

from __future__ import annotations

from collections.abc import Sequence

from rs_pipeline.annotators.base import Annotator, Label, Pair
from rs_pipeline.errors import InputError

SETTING = "annotator.mix"
MIXABLE = ("simulated", "file", "reward_model", "judge")


def parse_mix(text: str) -> list[tuple[str, float]]:
    """``name=weight`` entries separated by commas; each name a kind other than ``mixed``,
    named once, with a positive weight. Every problem in one ``InputError``."""
    problems, parts, seen = [], [], set()
    entries = [e.strip() for e in (text or "").split(",") if e.strip()]
    if not entries:
        raise InputError(f"setting {SETTING} is required when annotator.kind is 'mixed' "
                         "(e.g. 'simulated=0.5,reward_model=0.5')")
    for entry in entries:
        name, sep, weight = (s.strip() for s in entry.partition("="))
        try:
            value = float(weight) if sep else None
        except ValueError:
            value = None
        if name == "mixed":
            problems.append(f"setting {SETTING}: 'mixed' cannot be mixed into itself")
        elif name not in MIXABLE:
            problems.append(f"setting {SETTING}: unknown kind {name!r} (known: "
                            f"{', '.join(MIXABLE)})")
        elif name in seen:
            problems.append(f"setting {SETTING}: kind {name!r} is named twice")
        if value is None:
            problems.append(f"setting {SETTING}: {entry!r} is not name=weight")
        elif not value > 0:
            problems.append(f"setting {SETTING}: weight of {name!r} must be > 0, got {weight}")
        seen.add(name)
        parts.append((name, value))
    if problems:
        raise InputError("\n".join(problems))
    return parts


def kinds_in_use(kind: str, mix: str) -> list[str]:
    """The annotator kinds a setting uses: the mix's when ``kind`` is ``mixed``."""
    return [name for name, _ in parse_mix(mix)] if kind == "mixed" else [kind]


class MixedAnnotator:
    """Each pair's ``hp`` is the weighted average over the sources that labelled it (a source
    returning None drops out; the weights are renormalised); its ``annotator_id`` joins the
    contributing sources' ids with ``+``, ``source`` their non-empty sources, ``labelled_at``
    the latest time. A pair no source labelled gets None."""

    source = "mixed"

    def __init__(self, sources: Sequence[tuple[Annotator, float]]):
        if not sources or any(not w > 0 for _, w in sources):
            raise InputError(f"setting {SETTING}: every source needs a weight > 0")
        self.sources = list(sources)

    def label(self, pairs: Sequence[Pair], salt: str = "") -> list[Label | None]:
        per_source = [(src.label(pairs, salt), w) for src, w in self.sources]
        out: list[Label | None] = []
        for i in range(len(pairs)):
            got = [(labels[i], w) for labels, w in per_source if labels[i] is not None]
            if not got:
                out.append(None)
                continue
            total = sum(w for _, w in got)
            hp = sum(lab.hp * w for lab, w in got) / total
            sources = [lab.source for lab, _ in got if lab.source]
            times = [lab.labelled_at for lab, _ in got if lab.labelled_at]
            out.append(Label(min(1.0, max(0.0, hp)), "+".join(lab.annotator_id for lab, _ in got),
                             "+".join(sources) or None, max(times) if times else None))
        return out
