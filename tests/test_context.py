"""The run context: one place settings become objects, checked together at load."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from rs_pipeline.config import config_from_dict
from rs_pipeline.context import check_settings, load_context
from rs_pipeline.errors import InputError


def test_settings_are_checked_against_what_they_name(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    cfg = config_from_dict({
        "task": {"name": "prompts_file", "prompts_path": str(prompts)},
        "selection": {"selector": "verifier"},  # no verifier on a prompts file
        "policy": {"base_path": str(tmp_path / "nowhere")},
        "preference": {"seed_labels_path": str(tmp_path / "missing.parquet")},
    })
    problems = check_settings(cfg)
    assert len(problems) == 4
    assert any("annotator.kind='simulated' needs a task with a verifier" in p for p in problems)
    assert any("selection.selector='verifier' needs a verifier" in p for p in problems)
    assert any("policy.base_path" in p and "no config.json" in p for p in problems)
    assert any("preference.seed_labels_path: file" in p for p in problems)
    assert check_settings(config_from_dict({"task": {"name": "nope"}})) == [
        "setting task.name: unknown task 'nope' (known: rev8, addition, prompts_file; or an "
        "import path 'package.module:TaskClass')"]


def test_context_is_built_once_per_settings_content_and_derives_objects(tmp_path, monkeypatch):
    monkeypatch.delenv("RS_PIPELINE_CONFIG", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    (home / "rs_pipeline.yaml").write_text(yaml.safe_dump({"task": {"name": "addition"},
                                                           "generation": {"n": 3}}))
    ctx = load_context(home)
    assert load_context(home) is ctx
    assert ctx.task.name == "addition" and ctx.sampling.n == 3
    assert ctx.sampling.max_new_tokens == ctx.task.max_completion_chars + 1
    assert ctx.store.base_uri == str(home / "assets")
    assert ctx.mlflow_tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert ctx.annotator.source == "simulated"
    (home / "rs_pipeline.yaml").write_text(yaml.safe_dump({"generation": {"n": 5}}))
    changed = load_context(home)
    assert changed is not ctx and changed.sampling.n == 5 and changed.task.name == "rev8"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"generation": {"n": 7}}))
    monkeypatch.setenv("RS_PIPELINE_CONFIG", str(other))
    assert load_context(home).sampling.n == 7


def test_a_bad_settings_file_names_the_file_and_every_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("RS_PIPELINE_CONFIG", raising=False)
    labels = tmp_path / "l.parquet"
    pq.write_table(pa.table({"prompt": ["a"], "completion_a": ["b"], "completion_b": ["c"],
                             "hp": [1.0]}), labels)
    (tmp_path / "rs_pipeline.yaml").write_text(yaml.safe_dump({
        "annotator": {"kind": "file"}, "storage": {"base_uri": "memory://rs"}}))
    with pytest.raises(InputError, match="annotator.path is required"):
        load_context(tmp_path)
    (tmp_path / "rs_pipeline.yaml").write_text(yaml.safe_dump({
        "annotator": {"kind": "file", "path": str(labels)}, "storage": {"base_uri": "memory://rs"},
        "preference": {"seed_labels_path": str(labels)}}))
    ctx = load_context(tmp_path)
    assert ctx.annotator.source == "file" and not ctx.store.is_local
