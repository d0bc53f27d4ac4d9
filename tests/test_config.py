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
    assert add.gate.tolerance == 0.02 and add.sft.epochs == 3.0
    assert (add.preference.reward, add.preference.nll_weight) == ("likelihood", 3.0)


def test_choices_ranges_and_numbers_are_checked_with_every_problem_listed():
    with pytest.raises(InputError) as info:
        config_from_dict({"selection": {"selector": "oracle", "mix_weight": 1.5},
                          "preference": {"pair_strategy": "best", "heldout_fraction": 1.0},
                          "generation": {"n": 0, "top_p": 0.0}, "task": {"round_size": 2.5},
                          "annotator": {"kind": "people"}, "schedule": {"enabled": "yes"}})
    msg = str(info.value)
    assert msg.startswith("9 problems:")
    for text in ("selection.selector: 'oracle' is not one of 'preference', 'verifier', 'mix'",
                 "selection.mix_weight: must be <= 1, got 1.5",
                 "preference.pair_strategy: 'best' is not one of",
                 "preference.heldout_fraction: must be < 1, got 1.0",
                 "generation.n: must be >= 1, got 0", "generation.top_p: must be > 0, got 0.0",
                 "task.round_size: expected int, got 2.5", "annotator.kind: 'people' is not one of",
                 "schedule.enabled: expected bool, got 'yes'"):
        assert text in msg, text


def test_numbers_written_the_yaml_way_are_accepted():
    cfg = config_from_dict({"sft": {"learning_rate": "1e-4", "epochs": 2},
                            "generation": {"n": 16.0}, "selection": {"threshold": None}})
    assert (cfg.sft.learning_rate, cfg.sft.epochs, cfg.generation.n) == (1e-4, 2.0, 16)
    assert isinstance(cfg.generation.n, int) and cfg.selection.threshold is None
    with pytest.raises(InputError, match=r"generation\.n: expected int, got True"):
        config_from_dict({"generation": {"n": True}})
