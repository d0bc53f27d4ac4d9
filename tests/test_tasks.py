import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rs_pipeline.annotators import FileAnnotator, SimulatedAnnotator, hps, make_annotator
from rs_pipeline.config import AnnotatorConfig
from rs_pipeline.errors import InputError
from rs_pipeline.tasks import get_task
from rs_pipeline.tasks.prompts_file import read_prompt_file


def test_rev8_answers_and_bug():
    t = get_task("rev8")
    assert len(t.prompts()) == 3**8 and len(set(t.prompts())) == 3**8
    assert t.answer("01201122=") == "22110210"
    assert t.bugged_answer("01201122=") == "22101210"  # middle pair swapped
    assert t.verify("01201122=", "22110210") == 1.0 and t.verify("01201122=", "22101210") == 0.0


def test_addition_answers_and_dropped_carries():
    t = get_task("addition")
    assert len(t.prompts()) == 10_000
    assert t.answer("49+97=") == "641"
    assert t.bugged_answer("49+97=") == "63"  # 4+9 -> 3, 9+7 -> 6, carries dropped
    assert t.bugged_answer("12+34=") == t.answer("12+34=") == "64"
    assert t.bugged_answer("5+5=") == "0"


def test_simulated_annotator_flips_the_configured_share():
    t = get_task("rev8")
    rng = random.Random(0)
    prompts = rng.sample(t.prompts(), 2000)
    pairs = [(p, t.answer(p), t.wrong_answer(p, rng)) for p in prompts]
    labels = hps(SimulatedAnnotator(t, label_noise=0.1, seed=0).label(pairs))
    flipped = sum(h == 0.0 for h in labels) / len(labels)
    assert 0.08 < flipped < 0.12
    tie = SimulatedAnnotator(t, 0.1, 0).label([(prompts[0], "x", "x")])
    assert [(lab.hp, lab.annotator_id, lab.source, lab.labelled_at) for lab in tie] == [
        (0.5, "simulated:noise=0.1", None, None)]
    with pytest.raises(InputError, match="label_noise"):
        SimulatedAnnotator(t, label_noise=0.7)


def test_file_annotator_labels_either_order_and_names_bad_rows(tmp_path):
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"prompt": ["p1", "p2"], "completion_a": ["a", "c"],
                             "completion_b": ["b", "d"], "hp": [0.8, 0.0],
                             "annotator_id": ["ann-7", None],
                             "labelled_at": ["2026-11-01T10:00:00", None]}), path)
    ann = make_annotator(AnnotatorConfig(kind="file", path=str(path)), get_task("rev8"), 0)
    labels = ann.label([("p1", "a", "b"), ("p1", "b", "a"), ("p9", "a", "b"), ("p2", "c", "d")])
    assert hps(labels) == [0.8, pytest.approx(0.2), None, 0.0]
    version = f"{path}@{ann.version}"
    assert [(lab.annotator_id, lab.source, lab.labelled_at) for lab in labels[:2]] == [
        ("ann-7", version, "2026-11-01T10:00:00")] * 2
    assert (labels[3].annotator_id, labels[3].labelled_at) == ("file:labels.parquet", None)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["p1", "p2"], "completion_a": ["a", "c"],
                             "completion_b": ["b", "d"], "hp": [0.5, 1.5]}), bad)
    with pytest.raises(InputError, match=r"bad.parquet, row 1, column 'hp'"):
        FileAnnotator(bad)
    with pytest.raises(InputError, match="lacks column"):
        pq.write_table(pa.table({"prompt": ["p"]}), tmp_path / "x.parquet")
        FileAnnotator(tmp_path / "x.parquet")


def test_prompt_file_errors_name_file_row_and_column(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "hello"}\n{"prompt": "world"}\n')
    assert read_prompt_file(good) == ["hello", "world"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hello"}\n{"prompt": "  "}\n')
    with pytest.raises(InputError, match=r"bad.jsonl, row 1, column 'prompt'"):
        read_prompt_file(bad)
    with pytest.raises(InputError, match=r"lacks column\(s\) \['prompt'\] \(has \['text'\]\)"):
        (tmp_path / "q.jsonl").write_text('{"text": "x"}\n')
        read_prompt_file(tmp_path / "q.jsonl")
    with pytest.raises(InputError, match="unknown task"):
        get_task("chess")
