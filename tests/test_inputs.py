"""Bad input files are refused with every problem named (file, row, column), or quarantined."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rs_pipeline.annotators import FileAnnotator
from rs_pipeline.errors import InputError
from rs_pipeline.inputs import check_judgements_file, check_prompts_file
from rs_pipeline.tasks.prompts_file import read_prompt_file


def _jsonl(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode()
                                for line in lines) + b"\n")
    return path


def test_every_bad_prompt_row_is_named_at_once(tmp_path):
    f = _jsonl(tmp_path / "p.jsonl", [
        '{"prompt": "fine"}', '{"prompt": null}', '{"prompt": 3}', '{"prompt": ["a", "b"]}',
        '{"prompt": "   "}', '{"text": "no prompt key"}', b'{"prompt": "caf\\u00e9"}', b"\xff\xfe",
        '{"prompt": "fine"}', "not json", "[1, 2]"])
    check = check_prompts_file(f)
    assert [r["prompt"] for r in check.rows] == ["fine", "café"]
    assert check.quarantined == {"duplicate_prompts": 1}
    expected = [
        "row 1, column 'prompt': missing value",
        "row 2, column 'prompt': expected text, got int 3",
        "row 3, column 'prompt': expected text, got list",
        "row 4, column 'prompt': empty text",
        "row 5, column 'prompt': missing value",
        "row 7: not UTF-8 (byte 0: b'\\xff')",
        "row 9: not valid JSON",
        "row 10: expected a JSON object, got list",
    ]
    assert len(check.problems) == len(expected)
    for line, want in zip(check.problems, expected):
        assert line.startswith(f"{f}, {want}"), (line, want)
    with pytest.raises(InputError, match="8 problem") as info:
        read_prompt_file(f)
    assert "Traceback" not in str(info.value)


def test_duplicates_are_dropped_and_counted_or_refused(tmp_path):
    f = _jsonl(tmp_path / "p.jsonl", ['{"prompt": "a"}', '{"prompt": "b"}', '{"prompt": "a"}'])
    assert read_prompt_file(f) == ["a", "b"]
    refused = check_prompts_file(f, quarantine="refuse")
    assert refused.problems == [f"{f}, row 2: duplicate of row 0 (setting inputs.quarantine is "
                                "'refuse')"]


def test_judgement_files_check_types_ranges_and_pairs(tmp_path):
    f = tmp_path / "labels.parquet"
    pq.write_table(pa.table({
        "prompt": ["p", "p", "p", "p", "p", "p", None],
        "completion_a": ["a", "a", "x", "a", "a", "b", "a"],
        "completion_b": ["b", "a", "y", "c", "b", "a", "b"],
        "hp": [1.0, 0.5, float("nan"), 1.5, 0.2, 0.7, 1.0]}), f)
    check = check_judgements_file(f)
    assert check.problems == [
        f"{f}, row 2, column 'hp': must be a finite number in [0, 1], got nan",
        f"{f}, row 3, column 'hp': must be a finite number in [0, 1], got 1.5",
        f"{f}, row 6, column 'prompt': missing value"]
    assert check.quarantined == {"identical_pairs": 1, "duplicate_pairs": 2}
    assert [(r["completion_a"], r["hp"]) for r in check.rows] == [("a", 1.0)]
    strings = tmp_path / "s.jsonl"
    _jsonl(strings, ['{"prompt": "p", "completion_a": "a", "completion_b": "b", "hp": "0.9"}'])
    with pytest.raises(InputError, match=r"s.jsonl, row 0, column 'hp': expected a number in "
                                         r"\[0, 1\], got str '0.9'"):
        FileAnnotator(strings)
    ok = tmp_path / "ok.jsonl"
    _jsonl(ok, ['{"prompt": "p", "completion_a": "a", "completion_b": "a", "hp": 1}',
                '{"prompt": "p", "completion_a": "a", "completion_b": "b", "hp": 1}'])
    assert FileAnnotator(ok).quarantined == {"identical_pairs": 1}
    with pytest.raises(InputError, match="are identical"):
        FileAnnotator(ok, quarantine="refuse")
    # a policy may answer nothing, and that answer can be judged; an empty prompt cannot
    empty = tmp_path / "empty.jsonl"
    _jsonl(empty, ['{"prompt": "p", "completion_a": "a", "completion_b": "", "hp": 1}',
                   '{"prompt": " ", "completion_a": "a", "completion_b": "b", "hp": 1}'])
    check = check_judgements_file(empty)
    assert check.problems == [f"{empty}, row 1, column 'prompt': empty text"]
    assert [(r["completion_b"], r["hp"]) for r in check.rows] == [("", 1.0)]
