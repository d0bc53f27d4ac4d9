import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from rs_pipeline.cli import main, wipe_home
from rs_pipeline.config import demo_config


def test_a_home_keeps_one_history_unless_asked_to_start_fresh(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (home / "rs_pipeline.yaml").write_text(yaml.safe_dump(demo_config("rev8").to_dict()))
    (home / "assets").mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert main(["demo", "--task", "addition", "--home", str(home), "--rounds", "0"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--fresh" in err and "'rev8'" in err
    wipe_home(home)
    assert sorted(p.name for p in home.iterdir()) == [".rs_pipeline.lock", "dagster.yaml"]


def test_bad_config_file_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "h"))
    cfg = tmp_path / "run.yaml"
    cfg.write_text("sft:\n  epochs: lots\n")
    assert main(["demo", "--config", str(cfg), "--home", str(tmp_path / "h")]) == 2
    assert "setting sft.epochs: expected float, got 'lots'" in capsys.readouterr().err


def test_a_bad_prompts_file_fails_the_demo_with_the_file_and_row(tmp_path, monkeypatch, capsys,
                                                                 tiny_policy):
    home = tmp_path / "h"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"prompt": ""}\n')
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"prompt": ["a"], "completion_a": ["x"], "completion_b": ["y"],
                             "hp": [1.0]}), labels)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"task": {"name": "prompts_file", "prompts_path": str(prompts)},
                                   "policy": {"base_path": str(tiny_policy)},
                                   "annotator": {"kind": "file", "path": str(labels)},
                                   "preference": {"seed_labels_path": str(labels)}}))
    assert main(["demo", "--config", str(cfg), "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "prompts.jsonl, row 1, column 'prompt'" in err and "Traceback" not in err
    written = [p for p in home.rglob("*") if p.suffix in (".parquet", ".json", ".safetensors")]
    assert home.is_dir() and written == []  # nothing half-written anywhere in the home


def test_every_config_problem_is_reported_at_once_before_any_work(tmp_path, monkeypatch, capsys):
    home = tmp_path / "h"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"generation": {"n": -3}, "selection": {"selector": "oracle"},
                                   "annotator": {"label_noise": 0.9}, "sft": {"epoch": 2}}))
    assert main(["demo", "--config", str(cfg), "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "4 problems" in err
    for text in ("generation.n: must be >= 1, got -3", "selection.selector: 'oracle' is not one of",
                 "annotator.label_noise: must be <= 0.5", "sft.epoch: unknown"):
        assert text in err
    assert not (home / "assets").exists() and not (home / "history").exists()
