"""People label a round's pairs: the round writes a request, pauses, and resumes when the labels
arrive or the wait is over.

``<inbox>/<round>/`` holds, written atomically (temporary file, then rename) and rewritten only
when the requested pairs change:

- ``requests.parquet``, ``requests.jsonl``: one row per pair (``schemas``: ``label_requests``);
  people fill ``hp`` in [0, 1] (1: A is better), optionally ``annotator_id`` and ``labelled_at``,
  and save the rows as ``labels.parquet`` or ``labels.jsonl`` (rows left without ``hp`` count as
  unlabelled);
- ``argilla/``: an Argilla v2 dataset folder (``dataset.json``, ``settings.json``: text fields
  prompt/response_a/response_b and a label question ``preference``; ``records.json``) that
  ``rg.Dataset.from_disk`` imports; its records export (``records.to_json``) saved as
  ``argilla_export.json`` is read back;
- ``label_studio/``: ``tasks.json`` (tasks with ``data``) and ``config.xml`` (a Pairwise
  labeling config); the project's JSON export saved as ``label_studio_export.json`` is read back;
- ``request.json`` (written last): when the round asked, until when it waits, what it asked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rs_pipeline.annotators.base import Label, Pair
from rs_pipeline.errors import InputError
from rs_pipeline.ids import config_hash, file_version
from rs_pipeline.inputs import FileCheck, check_judgements_file, read_rows
from rs_pipeline.schemas import make_table

MANIFEST = "request.json"
#: answers people drop into a round's folder, looked for in this order
LABELS_FILES = ("labels.parquet", "labels.jsonl", "label_studio_export.json",
                "argilla_export.json")
REQUEST_FILES = ("requests.parquet", "requests.jsonl", "argilla/records.json",
                 "label_studio/tasks.json")
QUESTION = "preference"  # the Argilla question / Label Studio control name
ARGILLA_LABELS = {"A": 1.0, "B": 0.0, "tie": 0.5}

LABEL_STUDIO_CONFIG = """<View>
  <Header value="Which response answers the prompt better?"/>
  <Text name="prompt" value="$prompt"/>
  <Pairwise name="preference" toName="completion_a,completion_b"/>
  <Text name="completion_a" value="$completion_a"/>
  <Text name="completion_b" value="$completion_b"/>
</View>
"""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def pair_id(round_key: str, generation_a: str, generation_b: str) -> str:
    return "pair-" + config_hash([round_key, generation_a, generation_b])[:12]


def _atomic(path: Path, data: bytes | Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, ensure_ascii=False).encode()


@dataclass(frozen=True)
class RequestState:
    """Where a round's request stands: ``waiting`` (no answer yet), ``labelled`` (an answer
    file is there), ``expired`` (the wait is over without one) or ``missing`` (no request)."""

    kind: str
    folder: Path
    requested_at: str | None = None
    wait_hours: float | None = None
    labels_file: Path | None = None

    @property
    def ready(self) -> bool:
        return self.kind in ("labelled", "expired")

    @property
    def key(self) -> str:
        """What a resume for this state is keyed by (a new answer file version resumes again)."""
        if self.labels_file is not None:
            return f"{self.labels_file.name}@{file_version(self.labels_file)}"
        return f"{self.kind}@{self.requested_at}"

    def describe(self, round_key: str) -> str:
        if self.kind == "labelled":
            return f"labels for round {round_key} arrived: {self.labels_file}"
        if self.kind == "expired":
            return f"no labels arrived in {self.folder} within {self.wait_hours:g} h"
        if self.kind == "missing":
            return f"round {round_key}'s label request in {self.folder} is gone"
        return f"round {round_key} waits for labels in {self.folder} since {self.requested_at}"


def request_state(folder: str | Path, now: dt.datetime | None = None) -> RequestState:
    """The state of the request in ``folder`` at ``now`` (the deadline is the one the request
    was written with)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return RequestState("missing", folder)
    since, hours = manifest["requested_at"], float(manifest["wait_hours"])
    for name in LABELS_FILES:
        if (folder / name).is_file():
            return RequestState("labelled", folder, since, hours, folder / name)
    deadline = dt.datetime.fromisoformat(manifest["deadline"])
    kind = "expired" if (now or utc_now()) >= deadline else "waiting"
    return RequestState(kind, folder, since, hours)


class HumanAnnotator:
    """Labels from people, asked for per round through files in ``inbox`` (see the module)."""

    source = "human"

    def __init__(self, inbox: str | Path, wait_hours: float = 24.0, quarantine: str = "drop"):
        if wait_hours <= 0:
            raise InputError(f"setting annotator.wait_hours={wait_hours} must be > 0")
        self.inbox, self.wait_hours, self.quarantine = Path(inbox), wait_hours, quarantine

    def folder(self, round_key: str) -> Path:
        return self.inbox / round_key

    # --- asking -----------------------------------------------------------------------------
    def requested(self, round_key: str, fingerprint: str) -> pa.Table | None:
        """The pairs already requested for this round with this fingerprint, else None."""
        folder = self.folder(round_key)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if manifest.get("fingerprint") != fingerprint:
            return None
        return pq.read_table(folder / "requests.parquet")

    def write_request(self, round_key: str, requests: pa.Table, fingerprint: str,
                      now: dt.datetime | None = None) -> Path:
        """Write the request files (manifest last); idempotent for the same fingerprint."""
        folder = self.folder(round_key)
        if self.requested(round_key, fingerprint) is not None:
            return folder
        now = now or utc_now()
        rows = requests.to_pylist()
        _atomic(folder / "requests.parquet", lambda p: pq.write_table(requests, p))
        _atomic(folder / "requests.jsonl", "".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
        self._write_argilla(folder / "argilla", round_key, rows)
        _atomic(folder / "label_studio" / "tasks.json", _json([{"data": {
            k: r[k] for k in ("pair_id", "round", "prompt_id", "prompt", "completion_a",
                              "completion_b")}} for r in rows]))
        _atomic(folder / "label_studio" / "config.xml", LABEL_STUDIO_CONFIG.encode())
        _atomic(folder / MANIFEST, _json({
            "round": round_key, "pairs": len(rows), "fingerprint": fingerprint,
            "requested_at": iso(now), "wait_hours": self.wait_hours,
            "deadline": iso(now + dt.timedelta(hours=self.wait_hours)),
            "files": list(REQUEST_FILES), "answer_with": list(LABELS_FILES)}))
        return folder

    @staticmethod
    def _write_argilla(folder: Path, round_key: str, rows: list[dict]) -> None:
        def field(name: str, title: str) -> dict:
            return {"name": name, "title": title, "required": True,
                    "settings": {"type": "text", "use_markdown": False}}

        _atomic(folder / "dataset.json", _json({
            "name": f"rs_pipeline_{round_key}", "allow_extra_metadata": True}))
        _atomic(folder / "settings.json", _json({
            "guidelines": "Which response answers the prompt better? A, B, or a tie.",
            "fields": [field("prompt", "Prompt"), field("response_a", "Response A"),
                       field("response_b", "Response B")],
            "questions": [{"name": QUESTION, "title": "Which response is better?",
                           "required": True, "settings": {
                               "type": "label_selection", "visible_options": 3,
                               "options": [{"value": v, "text": v} for v in ARGILLA_LABELS]}}],
            "metadata": [], "vectors": [], "allow_extra_metadata": True}))
        _atomic(folder / "records.json", _json([{
            "id": r["pair_id"], "fields": {"prompt": r["prompt"], "response_a": r["completion_a"],
                                           "response_b": r["completion_b"]},
            "metadata": {"round": r["round"], "prompt_id": r["prompt_id"]},
            "suggestions": {}, "responses": {}, "vectors": {}} for r in rows]))

    # --- reading answers --------------------------------------------------------------------
    def state(self, round_key: str, now: dt.datetime | None = None) -> RequestState:
        return request_state(self.folder(round_key), now)

    def read_labels(self, round_key: str, requests: pa.Table,
                    path: Path) -> tuple[list[Label | None], dict[str, Any]]:
        """One label per requested pair (either order; None where the file has none) and what
        reading found. Rows for pairs not requested are ignored and counted; a file that labels
        none of the requested pairs is an error naming it."""
        check, blank = _checked(path, self.quarantine)
        if check.problems:
            raise InputError(f"labels file {path}: {len(check.problems)} problem(s):\n  "
                             + "\n  ".join(check.summary()))
        source = f"{path}@{file_version(path)}"
        modified = iso(dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc))
        found = {(r["prompt"], r["completion_a"], r["completion_b"]): Label(
            r["hp"], r.get("annotator_id") or f"human:{path.name}", source,
            r.get("labelled_at") or modified) for r in check.rows}
        wanted = requests.select(["prompt", "completion_a", "completion_b"]).to_pylist()
        labels, used = _match([(w["prompt"], w["completion_a"], w["completion_b"])
                               for w in wanted], found)
        if not used:
            raise InputError(
                f"labels file {path}: labels none of the {len(wanted)} pairs requested for round "
                f"{round_key} ({len(found)} labelled row(s), all for other pairs; the request is "
                f"{self.folder(round_key) / 'requests.jsonl'})")
        stats = {"requested": len(wanted), "ignored_labels": len(found) - len(used),
                 "unlabelled_rows": blank, "labels_file": str(path),
                 **{f"quarantined_{k}": v for k, v in check.quarantined.items()}}
        return labels, stats

    def label(self, pairs: Sequence[Pair], salt: str = "") -> list[Label | None]:
        """Labels for ``pairs`` from the answer file of round ``salt``, if one is there (the
        round's own step uses ``read_labels`` against its request instead)."""
        st = self.state(salt) if salt else None
        if st is None or st.labels_file is None:
            return [None] * len(pairs)
        check, _ = _checked(st.labels_file, self.quarantine)
        found = {(r["prompt"], r["completion_a"], r["completion_b"]): Label(
            r["hp"], r.get("annotator_id") or f"human:{st.labels_file.name}") for r in check.rows}
        return _match(list(pairs), found)[0]

    def why_unlabelled(self, round_key: str) -> str | None:
        """Why a round has no labels, when the reason is the wait (for the refresh's record)."""
        st = self.state(round_key)
        return st.describe(round_key) if st.kind == "expired" else None


def _match(pairs: list[Pair], found: dict[Pair, Label]) -> tuple[list[Label | None], set[Pair]]:
    labels: list[Label | None] = []
    used: set[Pair] = set()
    for prompt, a, b in pairs:
        if (prompt, a, b) in found:
            labels.append(found[(prompt, a, b)])
            used.add((prompt, a, b))
        elif (prompt, b, a) in found:
            labels.append(found[(prompt, b, a)].flipped())
            used.add((prompt, b, a))
        else:
            labels.append(None)
    return labels, used


def _checked(path: Path, quarantine: str) -> tuple[FileCheck, int]:
    """An answer file checked row by row (``inputs.check_judgements_file``) in our columns,
    without the rows people left blank (no ``hp``), and how many those were."""
    read = FileCheck(path)
    if path.name == "label_studio_export.json":
        rows = _from_label_studio(path)
    elif path.name == "argilla_export.json":
        rows = _from_argilla(path)
    else:
        rows = read_rows(path, read)
        if rows is not None:
            rows = [r if "__row" in r else {**r, "__row": i} for i, r in enumerate(rows)]
    kept = [r for r in rows or [] if r.get("hp") is not None]
    if rows and not kept:
        read.problem(None, "hp", f"no row is labelled yet (hp is empty in all {len(rows)} rows)")
        return read, len(rows)
    check = check_judgements_file(path, quarantine, rows=kept)
    check._found[:0] = read._found  # unreadable lines come first
    return check, len(rows or []) - len(kept)


def _load_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"labels file {path}: not a JSON export ({exc})") from None
    if not isinstance(data, list):
        raise InputError(f"labels file {path}: expected a JSON list, got {type(data).__name__}")
    return data


def _mean_label(votes: list[tuple[float, str, str | None]], i: int, texts: dict) -> dict:
    """One row from one or more people's votes on a pair: the mean ``hp`` (a soft label)."""
    row = {**texts, "__row": i}
    if votes:
        row["hp"] = sum(v[0] for v in votes) / len(votes)
        row["annotator_id"] = ",".join(sorted({v[1] for v in votes}))
        times = [v[2] for v in votes if v[2]]
        if times:
            row["labelled_at"] = max(times)
    return row


def _from_label_studio(path: Path) -> list[dict]:
    """Label Studio's JSON export of the request's tasks: Pairwise ``left`` (A) / ``right`` (B),
    or a Choices answer A / B / tie; cancelled annotations are skipped."""
    rows = []
    for i, task in enumerate(_load_list(path)):
        data = task.get("data", {}) if isinstance(task, dict) else {}
        votes = []
        for ann in task.get("annotations", []) if isinstance(task, dict) else []:
            if ann.get("was_cancelled"):
                continue
            for res in ann.get("result", []):
                value = res.get("value", {})
                hp = {"left": 1.0, "right": 0.0}.get(value.get("selected"))
                if hp is None and value.get("choices"):
                    hp = ARGILLA_LABELS.get(value["choices"][0])
                if hp is not None:
                    who = ann.get("completed_by")
                    who = who.get("email", who.get("id")) if isinstance(who, dict) else who
                    votes.append((hp, f"label-studio:{who}",
                                  ann.get("updated_at") or ann.get("created_at")))
        rows.append(_mean_label(votes, i, {k: data.get(k) for k in (
            "prompt", "completion_a", "completion_b")}))
    return rows


def _from_argilla(path: Path) -> list[dict]:
    """Argilla's records export (``records.to_json``): the ``preference`` responses A/B/tie."""
    rows = []
    for i, rec in enumerate(_load_list(path)):
        fields = rec.get("fields", {}) if isinstance(rec, dict) else {}
        votes = [(ARGILLA_LABELS[r["value"]], f"argilla:{r.get('user_id')}", None)
                 for r in (rec.get("responses", {}) or {}).get(QUESTION, [])
                 if r.get("value") in ARGILLA_LABELS]
        rows.append(_mean_label(votes, i, {"prompt": fields.get("prompt"),
                                           "completion_a": fields.get("response_a"),
                                           "completion_b": fields.get("response_b")}))
    return rows


def request_table(round_key: str, columns: dict[str, list]) -> pa.Table:
    """The ``label_requests`` table of a round's picked pairs (label columns empty)."""
    n = len(columns["prompt"])
    ids = [pair_id(round_key, a, b) for a, b in zip(columns["generation_id_a"],
                                                    columns["generation_id_b"])]
    return make_table("label_requests", {**columns, "pair_id": ids, "round": [round_key] * n,
                                         "hp": [None] * n, "annotator_id": [None] * n,
                                         "labelled_at": [None] * n})
