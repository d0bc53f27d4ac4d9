import pytest

from rs_pipeline.config import PipelineConfig, config_from_dict, demo_config, load_config
from rs_pipeline.errors import InputError


def test_yaml_overrides_and_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: {name: addition}\nsft: {epochs: 2}\ngeneration: {n: 16}\n")
    cfg = load_config(path)
    assert (cfg.task.name, cfg.sft.epochs, cfg.generation.n) == ("addition", 2.0, 16)
    assert cfg.preference.learning_rate == PipelineConfig().preference.learning_rate


def test_bad_settings_name_the_setting(tmp_path):
    with pytest.raises(InputError, match=r"setting sft\.epoch: unknown"):
        config_from_dict({"sft": {"epoch": 2}})
    with pytest.raises(InputError, match=r"setting generation\.n: expected int"):
        config_from_dict({"generation": {"n": "many"}})
    path = tmp_path / "c.yaml"
    path.write_text("task: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_demo_presets():
    assert demo_config("rev8").sft.learning_rate == 5e-4
    add = demo_config("addition", selection={"selector": "verifier"})
    assert add.task.name == "addition" and add.selection.selector == "verifier"
    assert add.gate.tolerance == 0.02 and add.sft.epochs == 2.0
