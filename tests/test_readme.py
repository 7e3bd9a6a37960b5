"""README stays true: its settings table is the one the code declares, defaults included."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.config import markdown_table
from app.core.results import ERROR_KINDS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_settings_table_matches_the_config_declarations():
    text = README.read_text()
    block = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", text, re.S)
    assert block, "README lost its settings-table markers"
    assert block.group(1) == markdown_table(), "run `make readme` to regenerate the settings table"


def test_readme_gives_the_two_commands_a_new_user_needs():
    text = README.read_text()
    assert "make run" in text and "make test" in text


def test_readme_error_kinds_table_names_every_error_kind():
    text = README.read_text()
    documented = re.findall(r"^\| `(\w+)` \| .*$", text.split("| Error kind |", 1)[1].split("\n\n", 1)[0], re.M)
    assert documented == list(ERROR_KINDS), "README's error kinds table lists each ErrorKind, in its order"
