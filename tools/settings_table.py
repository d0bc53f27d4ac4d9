"""Rewrite the README's settings table from the config dataclasses' docs.

Run: ``.venv/bin/python tools/settings_table.py`` (tests/test_readme.py checks it is current).
"""

import re
from pathlib import Path

from rs_pipeline.config import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"

if __name__ == "__main__":
    text = README.read_text()
    README.write_text(re.sub(r"\| setting \| default \| meaning \|\n(\|.*\|\n)+",
                             settings_table() + "\n", text))
