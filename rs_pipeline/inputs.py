"""Reading the files a user hands the pipeline (prompts, judgements), checked row by row.

Every problem becomes one line naming the file, the row (0-based) and the column; all of a
file's problems are collected, never only the first. Rows a user would rather drop than fix
(duplicates, pairs of identical completions) are *quarantined*: dropped and counted, or refused,
as ``inputs.quarantine`` says.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from rs_pipeline.chat import messages_prompt

MAX_LISTED = 20  # problem lines listed per file before "... and N more"


@dataclass
class FileCheck:
    """What reading one file found: the good rows, the problems, the quarantined counts."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantined: dict[str, int] = field(default_factory=dict)
    _found: list[tuple[int, str]] = field(default_factory=list)

    def problem(self, row: int | None, column: str | None, what: str) -> None:
        where = str(self.path)
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        self._found.append((-1 if row is None else row, f"{where}: {what}"))

    @property
    def problems(self) -> list[str]:
        """Every problem, in row order (file-level ones first)."""
        return [text for _, text in sorted(self._found, key=lambda f: f[0])]

    def summary(self) -> list[str]:
        extra = len(self.problems) - MAX_LISTED
        return self.problems[:MAX_LISTED] + ([f"{self.path}: ... and {extra} more problems"]
                                             if extra > 0 else [])


def read_rows(path: str | Path, check: FileCheck) -> list[dict[str, Any]] | None:
    """Rows of a Parquet or JSON-lines file as dicts (None, with a problem noted, if the file
    cannot be read at all). JSON lines are read one by one, so a bad line is named."""
    path = Path(path)
    if not path.is_file():
        check.problem(None, None, "file does not exist")
        return None
    if path.suffix == ".parquet":
        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # noqa: BLE001 - reported with the file named
            check.problem(None, None, f"cannot be read as Parquet ({exc})")
            return None
    rows = []
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                check.problem(i, None, f"not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})")
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                check.problem(i, None, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(row, dict):
                check.problem(i, None, f"expected a JSON object, got {type(row).__name__}")
                continue
            rows.append(row | {"__row": i})
    return rows


def _row(r: dict, i: int) -> int:
    return r.get("__row", i)


def _text(check: FileCheck, r: dict, i: int, column: str, empty_ok: bool = False) -> str | None:
    """A text cell; an empty one is a problem unless ``empty_ok`` (a completion may be empty: a
    policy can answer nothing, and that answer can be judged)."""
    value = r.get(column)
    if value is None:
        check.problem(_row(r, i), column, "missing value")
    elif not isinstance(value, str):
        check.problem(_row(r, i), column, f"expected text, got {type(value).__name__} {value!r:.40}")
    elif not value.strip() and not empty_ok:
        check.problem(_row(r, i), column, "empty text")
    else:
        return value
    return None


def _columns(check: FileCheck, rows: list[dict], needed: tuple[str, ...]) -> bool:
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    missing = [c for c in needed if c not in present]
    if missing:
        check.problem(None, None, f"lacks column(s) {missing} (has {sorted(present - {'__row'})})")
    return not missing


def _quarantine(check: FileCheck, kind: str, row: int, what: str, refuse: bool) -> None:
    if refuse:
        check.problem(row, None, f"{what} (setting inputs.quarantine is 'refuse')")
    else:
        check.quarantined[kind] = check.quarantined.get(kind, 0) + 1


def check_prompts_file(path: str | Path, quarantine: str = "drop") -> FileCheck:
    """A prompts file: per row a ``prompt`` text or a ``messages`` conversation (a list of
    {role, content} texts ending with a user turn; kept as ``chat.messages_prompt``);
    duplicate prompts are quarantined."""
    check = FileCheck(Path(path))
    rows = read_rows(path, check)
    if rows is None:
        return check
    if not any("prompt" in r or "messages" in r for r in rows):
        present = set().union(*(r.keys() for r in rows)) - {"__row"} if rows else set()
        check.problem(None, None, f"lacks column(s) ['prompt'] (has {sorted(present)}); a chat "
                                  "conversation goes in a 'messages' column")
        return check
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        text = _prompt_or_messages(check, r, i)
        if text is None:
            continue
        if text in seen:
            _quarantine(check, "duplicate_prompts", _row(r, i),
                        f"duplicate of row {seen[text]}", quarantine == "refuse")
            continue
        seen[text] = _row(r, i)
        check.rows.append({"prompt": text, "row": _row(r, i)})
    if not check.rows and not check.problems:
        check.problem(None, None, "holds no prompts")
    return check


def _prompt_or_messages(check: FileCheck, r: dict, i: int) -> str | None:
    if r.get("messages") is None:
        return _text(check, r, i, "prompt")
    if r.get("prompt") is not None:
        check.problem(_row(r, i), None, "holds both 'prompt' and 'messages': give one of them")
        return None
    messages = r["messages"]
    if not isinstance(messages, list) or not messages:
        check.problem(_row(r, i), "messages", "expected a non-empty list of {role, content}, got "
                                              f"{type(messages).__name__} {messages!r:.40}")
        return None
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            what = sorted(m) if isinstance(m, dict) else f"{type(m).__name__} {m!r:.40}"
            check.problem(_row(r, i), "messages", f"message {j}: expected exactly the keys "
                                                  f"'role' and 'content', got {what}")
            return None
        for key in ("role", "content"):
            if not isinstance(m[key], str) or not m[key].strip():
                check.problem(_row(r, i), "messages", f"message {j}: {key!r} must be non-empty "
                                                      f"text, got {m[key]!r:.40}")
                return None
    if messages[-1]["role"] != "user":
        check.problem(_row(r, i), "messages", f"the last message must be the user's (the policy "
                                              f"answers it), got role {messages[-1]['role']!r}")
        return None
    return messages_prompt(messages)


def check_judgements_file(path: str | Path, quarantine: str = "drop",
                          rows: list[dict[str, Any]] | None = None) -> FileCheck:
    """A judgements file: ``prompt``, ``completion_a``, ``completion_b`` texts and ``hp``, a finite
    number in [0, 1] (the probability A is preferred); optionally ``annotator_id`` and
    ``labelled_at`` (kept as the labels' provenance). Pairs of identical completions and
    repeated pairs are quarantined. ``rows``: the file's rows already read (or converted from a
    tool's export), each with its ``__row``; problems still name ``path``."""
    check = FileCheck(Path(path))
    rows = read_rows(path, check) if rows is None else rows
    if rows is None or not _columns(check, rows, ("prompt", "completion_a", "completion_b", "hp")):
        return check
    seen: dict[tuple[str, str, str], int] = {}
    for i, r in enumerate(rows):
        texts = [_text(check, r, i, "prompt"), *(_text(check, r, i, c, empty_ok=True)
                                                  for c in ("completion_a", "completion_b"))]
        hp = _probability(check, r, i)
        if None in texts or hp is None:
            continue
        prompt, a, b = texts
        if a == b:
            _quarantine(check, "identical_pairs", _row(r, i), "completion_a and completion_b "
                        "are identical (no preference to learn)", quarantine == "refuse")
            continue
        key = (prompt, *sorted((a, b)))
        if key in seen:
            _quarantine(check, "duplicate_pairs", _row(r, i), f"the same pair as row {seen[key]}",
                        quarantine == "refuse")
            continue
        seen[key] = _row(r, i)
        check.rows.append({"prompt": prompt, "completion_a": a, "completion_b": b, "hp": hp,
                           **_provenance(check, r, i)})
    if not check.rows and not check.problems:
        check.problem(None, None, "holds no usable judgements")
    return check


def _provenance(check: FileCheck, r: dict, i: int) -> dict[str, str]:
    """The optional ``annotator_id`` (who) and ``labelled_at`` (when) columns of a row."""
    out = {}
    for col in ("annotator_id", "labelled_at"):
        value = r.get(col)
        if value is None:
            continue
        if isinstance(value, str):
            out[col] = value
        elif col == "labelled_at" and hasattr(value, "isoformat"):
            out[col] = value.isoformat()
        else:
            check.problem(_row(r, i), col, f"expected text, got {type(value).__name__} "
                                           f"{value!r:.40}")
    return out


def _probability(check: FileCheck, r: dict, i: int) -> float | None:
    value = r.get("hp")
    if value is None:
        check.problem(_row(r, i), "hp", "missing value")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        check.problem(_row(r, i), "hp", f"expected a number in [0, 1], got "
                                        f"{type(value).__name__} {value!r:.40}")
    elif not math.isfinite(value) or not 0.0 <= value <= 1.0:
        check.problem(_row(r, i), "hp", f"must be a finite number in [0, 1], got {value!r}")
    else:
        return float(value)
    return None
