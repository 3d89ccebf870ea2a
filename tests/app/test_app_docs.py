"""The README's API section documents every app argument and request field the code declares."""

from __future__ import annotations

import re

from app.api import REQUEST_FIELDS
from app.config import AppArgs
from tests.support.serve_cluster import REPO_ROOT


def api_section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- BEGIN section:api -->(.*?)<!-- END section:api -->", text, re.S)
    assert match, "README.md has no api section"
    return match.group(1)


def test_readme_documents_every_app_argument():
    section = api_section()
    missing = [name for name in AppArgs.model_fields if f"`{name}`" not in section]
    assert not missing, f"README api section does not mention: {missing}"


def test_readme_documents_every_request_field():
    section = api_section()
    missing = [name for name in REQUEST_FIELDS if f"`{name}`" not in section]
    assert not missing, f"README api section does not mention: {missing}"


def test_readme_metric_table_is_every_metric_the_app_exports():
    from app.metrics import METRICS

    text = (REPO_ROOT / "README.md").read_text()
    table = re.search(r"<!-- BEGIN metrics-table -->(.*?)<!-- END metrics-table -->", text, re.S)
    assert table, "README.md has no metrics table"
    rows = {}
    for line in table.group(1).strip().splitlines()[2:]:
        name, kind, labels, unit, what = [cell.strip() for cell in line.strip("|").split("|")]
        rows[name.strip("`")] = (
            kind,
            tuple(label.strip(" `") for label in labels.split(",") if label.strip()),
            unit,
            what,
        )
    expected = {}
    for name, (kind, labels, _) in METRICS.items():
        expected[f"ray_{name}_total" if kind == "counter" else f"ray_{name}"] = (kind, labels)
    assert {name: row[:2] for name, row in rows.items()} == expected
    assert all(unit and what for _, _, unit, what in rows.values())
