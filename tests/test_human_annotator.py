"""The human annotator's files: the request a round writes, the wait, and reading answers back
(our columns, Label Studio's and Argilla's exports), matched to the requested pairs."""

import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rs_pipeline.annotators import make_annotator
from rs_pipeline.annotators.human import HumanAnnotator, request_state, request_table
from rs_pipeline.config import AnnotatorConfig
from rs_pipeline.errors import InputError
from rs_pipeline.ids import file_version
from rs_pipeline.tasks import get_task

T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.timezone.utc)


def _requests(n=4):
    return request_table("r0002", {
        "prompt_id": [f"p{i}" for i in range(n)], "prompt": [f"{i}012=" for i in range(n)],
        "completion_a": [f"210{i}" for i in range(n)], "completion_b": [f"201{i}" for i in range(n)],
        "generation_id_a": [f"g{i}a" for i in range(n)],
        "generation_id_b": [f"g{i}b" for i in range(n)], "policy_id": ["pol-x"] * n})


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_request_is_four_files_written_once_and_waits_until_its_deadline(tmp_path):
    ann = make_annotator(AnnotatorConfig(kind="human", inbox=str(tmp_path / "inbox"),
                                         wait_hours=2.0), get_task("rev8"), 0)
    folder = ann.write_request("r0002", _requests(), "fp1", now=T0)
    assert folder == tmp_path / "inbox" / "r0002"
    assert pq.read_table(folder / "requests.parquet").num_rows == 4
    rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["hp"] is None and rows[0]["pair_id"].startswith("pair-")
    assert {"round", "prompt_id", "generation_id_a", "generation_id_b"} <= set(rows[0])
    records = json.loads((folder / "argilla" / "records.json").read_text())
    assert len(records) == 4 and records[1]["fields"] == {
        "prompt": "1012=", "response_a": "2101", "response_b": "2011"}
    settings = json.loads((folder / "argilla" / "settings.json").read_text())
    assert [f["name"] for f in settings["fields"]] == ["prompt", "response_a", "response_b"]
    assert settings["questions"][0]["settings"]["type"] == "label_selection"
    tasks = json.loads((folder / "label_studio" / "tasks.json").read_text())
    assert len(tasks) == 4 and tasks[2]["data"]["completion_b"] == "2012"
    assert '<Pairwise name="preference" toName="completion_a,completion_b"/>' in (
        folder / "label_studio" / "config.xml").read_text()
    assert not [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]
    # the same request again rewrites nothing (its time stays); another one replaces it
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    ann.write_request("r0002", _requests(), "fp1", now=T0 + dt.timedelta(hours=1))
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == before
    assert ann.requested("r0002", "fp1").num_rows == 4 and ann.requested("r0002", "fp2") is None
    # the wait: waiting until the deadline, then expired (the reason names folder and hours)
    st = request_state(folder, T0 + dt.timedelta(hours=1, minutes=59))
    assert (st.kind, st.requested_at) == ("waiting", "2026-11-30T08:00:00+00:00")
    assert st.describe("r0002") == (f"round r0002 waits for labels in {folder} since "
                                    "2026-11-30T08:00:00+00:00")
    st = request_state(folder, T0 + dt.timedelta(hours=2))
    assert st.kind == "expired" and st.ready
    assert st.describe("r0002") == f"no labels arrived in {folder} within 2 h"
    assert request_state(tmp_path / "nowhere").kind == "missing"


def test_labels_are_matched_in_either_order_with_provenance(tmp_path):
    ann = HumanAnnotator(tmp_path, 24.0)
    req = _requests()
    folder = ann.write_request("r0002", req, "fp", now=T0)
    rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    rows[0].update(hp=1.0, annotator_id="ann-7", labelled_at="2026-11-30T09:00:00+00:00")
    rows[1].update(hp=0.25)
    rows[2].update(hp=1.0, completion_a=rows[2]["completion_b"], completion_b=rows[2]["completion_a"])
    # row 3 left blank; one row for a pair nobody asked about
    extra = {"prompt": "2222=", "completion_a": "2222", "completion_b": "2212", "hp": 1.0}
    _jsonl(folder / "labels.jsonl", [*rows, extra])
    st = ann.state("r0002")
    assert st.kind == "labelled" and st.labels_file == folder / "labels.jsonl"
    labels, stats = ann.read_labels("r0002", req, st.labels_file)
    assert [lab and lab.hp for lab in labels] == [1.0, 0.25, 0.0, None]
    mtime = dt.datetime.fromtimestamp(os.stat(folder / "labels.jsonl").st_mtime,
                                      dt.timezone.utc).isoformat(timespec="seconds")
    source = f"{folder / 'labels.jsonl'}@{file_version(folder / 'labels.jsonl')}"
    assert (labels[0].annotator_id, labels[0].labelled_at, labels[0].source) == (
        "ann-7", "2026-11-30T09:00:00+00:00", source)
    assert (labels[1].annotator_id, labels[1].labelled_at) == ("human:labels.jsonl", mtime)
    assert stats["ignored_labels"] == 1 and stats["unlabelled_rows"] == 1
    assert stats["requested"] == 4
    assert st.key == f"labels.jsonl@{file_version(folder / 'labels.jsonl')}"


def test_a_file_for_other_pairs_or_with_bad_rows_is_refused_naming_it(tmp_path):
    ann = HumanAnnotator(tmp_path, 24.0)
    req = _requests()
    folder = ann.write_request("r0002", req, "fp", now=T0)
    other = folder / "labels.parquet"
    pq.write_table(pa.table({"prompt": ["2222="], "completion_a": ["2222"],
                             "completion_b": ["2212"], "hp": [1.0]}), other)
    with pytest.raises(InputError, match=f"labels file {other}: labels none of the 4 pairs "
                                         "requested for round r0002"):
        ann.read_labels("r0002", req, other)
    bad = folder / "labels.jsonl"
    _jsonl(bad, [{"prompt": "0012=", "completion_a": "2100", "completion_b": "2010", "hp": 1.5},
                 {"prompt": "1012=", "completion_a": "2101", "completion_b": "2011", "hp": "A"}])
    with pytest.raises(InputError) as exc:
        ann.read_labels("r0002", req, bad)
    assert f"{bad}, row 0, column 'hp': must be a finite number in [0, 1], got 1.5" in str(exc.value)
    assert f"{bad}, row 1, column 'hp': expected a number in [0, 1]" in str(exc.value)


def test_label_studio_and_argilla_exports_are_read_back(tmp_path):
    ann = HumanAnnotator(tmp_path, 24.0)
    req = _requests()
    folder = ann.write_request("r0002", req, "fp", now=T0)
    tasks = json.loads((folder / "label_studio" / "tasks.json").read_text())
    picks = ["left", "right", None, "left"]
    for task, pick in zip(tasks, picks):
        task["annotations"] = [] if pick is None else [{
            "completed_by": {"id": 3, "email": "ann@example.org"}, "was_cancelled": False,
            "updated_at": "2026-11-30T10:00:00Z",
            "result": [{"from_name": "preference", "to_name": ["completion_a", "completion_b"],
                        "type": "pairwise", "value": {"selected": pick}}]}]
    (folder / "label_studio_export.json").write_text(json.dumps(tasks))
    labels, stats = ann.read_labels("r0002", req, folder / "label_studio_export.json")
    assert [lab and lab.hp for lab in labels] == [1.0, 0.0, None, 1.0]
    assert labels[0].annotator_id == "label-studio:ann@example.org"
    assert labels[0].labelled_at == "2026-11-30T10:00:00Z" and stats["unlabelled_rows"] == 1
    records = json.loads((folder / "argilla" / "records.json").read_text())
    records[0]["responses"] = {"preference": [{"value": "A", "user_id": "u1"},
                                              {"value": "tie", "user_id": "u2"}]}
    records[1]["responses"] = {"preference": [{"value": "B", "user_id": "u1"}]}
    (folder / "argilla_export.json").write_text(json.dumps(records))
    labels, _ = ann.read_labels("r0002", req, folder / "argilla_export.json")
    assert [lab and lab.hp for lab in labels] == [0.75, 0.0, None, None]
    assert labels[0].annotator_id == "argilla:u1,argilla:u2"


def test_preflight_names_an_inbox_that_cannot_hold_requests(tmp_path):
    from rs_pipeline import preflight
    from rs_pipeline.config import config_from_dict
    from rs_pipeline.context import RunContext

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    seed = tmp_path / "seed.jsonl"
    seed.write_text(json.dumps({"prompt": "0120=", "completion_a": "0210",
                                "completion_b": "0201", "hp": 1.0}) + "\n")
    cfg = config_from_dict({"annotator": {"kind": "human", "inbox": str(not_a_dir / "inbox")},
                            "preference": {"seed_labels_path": str(seed)},
                            "storage": {"base_uri": str(tmp_path / "store")}})
    problems = preflight.preflight(RunContext(cfg, tmp_path / "home"))
    assert problems == [f"setting annotator.inbox: {not_a_dir / 'inbox'} is not writable "
                        "(Not a directory)"]
    cfg = config_from_dict({"annotator": {"kind": "human"}})
    from rs_pipeline.context import check_settings

    assert ("setting preference.seed_labels_path is required when annotator.kind is 'human' (a "
            "judgements file cannot label the synthetic seed pairs)") in check_settings(cfg)
