"""README section `chart`: its values table is values.yaml (every documented key, its default and its
`# --` description), and the prerequisites it lists match what the chart renders.

Regenerate the table after editing values.yaml:
    .venv/bin/python tests/chart/test_chart_docs.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

if __name__ == "__main__":  # run as a script: make `tests.chart` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.chart.chartlib import CHART_DIR, REPO_ROOT, render, values_schema_generator

VALUES_FILE = CHART_DIR / "values.yaml"
README = REPO_ROOT / "README.md"
BEGIN, END = "<!-- BEGIN values-table -->", "<!-- END values-table -->"


def documented_values() -> list[tuple[str, object, str]]:
    """(dotted key, default, description) for every key with a `# --` comment, in file order.

    A commented key is documented as a whole (its children are not listed separately); an
    uncommented key must be a section whose children are documented. The comments are read by the
    same parser that writes the schema's descriptions (ci/values_schema.py).
    """
    comments = values_schema_generator().documented_comments()
    rows, undocumented = [], []

    def walk(section: dict, prefix: str) -> None:
        for key, value in section.items():
            path = prefix + key
            if path in comments:
                rows.append((path, value, comments[path]))
            elif isinstance(value, dict) and value:
                walk(value, path + ".")
            else:
                undocumented.append(path)

    walk(yaml.safe_load(VALUES_FILE.read_text()), "")
    assert not undocumented, f"values.yaml keys without a '# --' description: {undocumented}"
    return rows


def values_table() -> str:
    lines = ["| value | default | description |", "|---|---|---|"]
    for key, default, description in documented_values():
        shown = json.dumps(default, separators=(", ", ": "))
        escaped = description.replace("|", "\\|")
        lines.append(f"| `{key}` | `{shown}` | {escaped} |")
    return "\n".join(lines)


def readme_chart_section() -> str:
    text = README.read_text()
    start, end = text.index("<!-- BEGIN section:chart -->"), text.index("<!-- END section:chart -->")
    return text[start:end]


def test_readme_values_table_matches_values_yaml():
    section = readme_chart_section()
    table = section[section.index(BEGIN) + len(BEGIN) : section.index(END)].strip()
    assert table == values_table(), "README values table is stale: run .venv/bin/python tests/chart/test_chart_docs.py"


def test_every_values_yaml_key_is_documented_in_the_table():
    documented = {key for key, _, _ in documented_values()}

    def leaves(value, prefix=""):
        for key, item in value.items():
            path = f"{prefix}{key}"
            if path in documented:
                yield path
            elif isinstance(item, dict) and item:
                yield from leaves(item, path + ".")
            else:
                yield path

    assert set(leaves(yaml.safe_load(VALUES_FILE.read_text()))) == documented


def test_readme_names_the_prerequisites_and_versions_the_chart_renders_for():
    section = readme_chart_section()
    rendered = render()
    for needed in (
        "KubeRay",
        "1.7",
        "Karpenter",
        "Neuron device plugin",
        "ingress",
        "helm install",
        "helm upgrade",
        "helm uninstall",
    ):
        assert needed in section, needed
    assert rendered.rayservice["spec"]["rayClusterConfig"]["rayVersion"] in section
    assert "karpenter.sh/nodepool" in section and "aws.amazon.com/neuron" in section


def test_values_yaml_points_editors_at_the_schema():
    assert VALUES_FILE.read_text().splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"


def write_values_table() -> None:
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + values_table() + "\n" + text[end:])


if __name__ == "__main__":
    write_values_table()
    print(f"rewrote the values table in {README.relative_to(REPO_ROOT)}")
