"""The documented settings are the service's settings: each table names every AESERVE_* variable."""

import re
from pathlib import Path

import pytest

from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("doc", "prefix"), [("README.md", "AESERVE_"), ("docs/API.md", "")])
def test_every_setting_is_in_the_settings_table(doc: str, prefix: str) -> None:
    text = (REPO / doc).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    named = {m for row in rows for m in re.findall(rf"`{prefix}([A-Z0-9_]+)`", row.split("|")[1])}
    wanted = {name.upper() for name in Settings.model_fields}
    assert wanted - named == set(), f"{doc} leaves out {sorted(wanted - named)}"
