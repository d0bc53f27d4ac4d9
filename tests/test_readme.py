"""The README promises every setting and the two commands: keep it honest."""

import re
from pathlib import Path

import pytest

from rs_pipeline.cli import main
from rs_pipeline.config import documented_settings, settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_lists_every_setting_with_its_default():
    text = README.read_text()
    names = [n for n, _, _ in documented_settings()]
    assert len(names) > 40 and "sft.epochs" in names and "preference.pair_strategy" in names
    assert settings_table() in text  # regenerate with tools/settings_table.py
    assert "make demo" in text and "make test" in text


def test_readme_shows_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    commands = re.search(r"\{([a-z,]+)\}", capsys.readouterr().out).group(1).split(",")
    assert "export" in commands
    text = README.read_text()
    assert [c for c in commands if f"rs-pipeline {c}" not in text] == []
