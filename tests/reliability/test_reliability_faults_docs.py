"""The fault-drill table in README.md and docs/faults.md is the committed reference run's (docs/faults.json).

``bench/faults.py --update-docs`` writes all three; this keeps a hand edit of one from going unnoticed.
"""

from __future__ import annotations

import json

import pytest

from bench.faults import REFERENCE, SCENARIOS, TABLE_BEGIN, TABLE_COLUMNS, TABLE_DOCS, TABLE_END, markdown_table


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def test_the_reference_run_has_every_scenario_with_the_measured_fields(reference):
    assert [name for name in reference if not name.startswith("_")] == list(SCENARIOS)
    for name in SCENARIOS:
        result = reference[name]
        if result.get("supported", True):
            missing = [column for column in TABLE_COLUMNS if column not in result]
            assert not missing, f"{name} lacks {missing}"


@pytest.mark.parametrize("path", TABLE_DOCS, ids=lambda path: path.name)
def test_the_documented_table_is_the_reference_runs(path, reference):
    text = path.read_text()
    table = text[text.index(TABLE_BEGIN) + len(TABLE_BEGIN) : text.index(TABLE_END)].strip()
    assert table == markdown_table(reference), f"{path.name} is stale: run bench/faults.py --update-docs"
