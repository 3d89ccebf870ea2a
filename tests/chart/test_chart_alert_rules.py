"""The chart's PrometheusRule, checked by Prometheus's own tool: ``promtool check rules`` on the rendered
rules and ``promtool test rules`` with unit tests of every alert (tests/chart/alert_rules_test.yaml: each
fires when it should and stays silent when it should not). The thresholds come from values."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.chartlib import render
from tests.support.prometheus import promtool_binary

UNIT_TESTS = Path(__file__).with_name("alert_rules_test.yaml")
RULES_ON = {"monitoring": {"prometheusRule": {"enabled": True}}}


def rendered_rules(values: dict | None = None) -> list[dict]:
    rule = render({**RULES_ON, **(values or {})}).one("PrometheusRule")
    return [item for group in rule["spec"]["groups"] for item in group["rules"]]


def write_rules(directory: Path, values: dict | None = None) -> Path:
    rule = render({**RULES_ON, **(values or {})}).one("PrometheusRule")
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool_binary(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_rendered_rules_pass_promtool_check(tmp_path):
    write_rules(tmp_path)
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def unit_tests_with_descriptions(rules: list[dict]) -> dict:
    """The unit tests, each expected alert given its rule's static description (promtool compares annotations
    exactly; the summaries, which quote the value, are written in the file)."""
    descriptions = {rule["alert"]: rule["annotations"]["description"] for rule in rules}
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                alert["exp_annotations"]["description"] = descriptions[check["alertname"]]
    return tests


def test_every_alert_fires_and_stays_silent_in_promtools_unit_tests(tmp_path):
    rules = rendered_rules()
    write_rules(tmp_path)
    (tmp_path / "alert_rules_test.yaml").write_text(
        yaml.safe_dump(unit_tests_with_descriptions(rules), sort_keys=False)
    )
    result = promtool("test", "rules", "alert_rules_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_cover_each_alert_both_ways():
    fires, silent = set(), set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in rendered_rules()}
    assert alerts == {
        "SDXLNoHealthyReplica",
        "SDXLReplicaUnhealthy",
        "SDXLServerErrors",
        "SDXLLatencyAboveSLO",
        "SDXLBackpressure",
        "SDXLPipelineFailures",
    }
    assert fires == alerts and silent == alerts


def test_the_unit_tests_fail_against_rules_with_other_thresholds(tmp_path):
    # The unit tests pin the default thresholds: rules rendered with stricter or looser values must fail them.
    values = {"monitoring": {"prometheusRule": {"enabled": True, "pipelineFailures": 4, "serverErrorRatio": 0.2}}}
    rules = rendered_rules(values)
    write_rules(tmp_path, values)
    (tmp_path / "alert_rules_test.yaml").write_text(
        yaml.safe_dump(unit_tests_with_descriptions(rules), sort_keys=False)
    )
    result = promtool("test", "rules", "alert_rules_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    report = result.stdout + result.stderr
    assert "alertname: SDXLPipelineFailures" in report and "alertname: SDXLServerErrors" in report


@pytest.mark.parametrize(
    ("value", "alert", "rendered"),
    [
        ({"noHealthyReplicaFor": "7m"}, "SDXLNoHealthyReplica", ("for", "7m")),
        ({"replicaUnhealthyFor": "3m"}, "SDXLReplicaUnhealthy", ("for", "3m")),
        ({"serverErrorRatio": 0.02}, "SDXLServerErrors", ("expr", "> 0.02")),
        ({"serverErrorFor": "9m"}, "SDXLServerErrors", ("for", "9m")),
        ({"latencySloSeconds": 12.5}, "SDXLLatencyAboveSLO", ("expr", "> 12.5")),
        ({"latencyFor": "20m"}, "SDXLLatencyAboveSLO", ("for", "20m")),
        ({"backpressureRatio": 0.1}, "SDXLBackpressure", ("expr", "> 0.1")),
        ({"backpressureFor": "1h"}, "SDXLBackpressure", ("for", "1h")),
        ({"pipelineFailures": 5}, "SDXLPipelineFailures", ("expr", ">= 5")),
    ],
)
def test_each_threshold_comes_from_its_value(value, alert, rendered):
    rules = {
        rule["alert"]: rule for rule in rendered_rules({"monitoring": {"prometheusRule": {"enabled": True, **value}}})
    }
    field, expected = rendered
    assert expected in rules[alert][field] if field == "expr" else rules[alert][field] == expected


def test_alert_labels_reach_every_alert_and_rule_labels_the_object():
    values = {
        "monitoring": {
            "prometheusRule": {
                "enabled": True,
                "alertLabels": {"team": "ml-platform"},
                "labels": {"release": "kube-prometheus-stack"},
            }
        }
    }
    rule = render(values).one("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert all(item["labels"]["team"] == "ml-platform" for group in rule["spec"]["groups"] for item in group["rules"])


def test_the_rules_select_the_release_namespace():
    rules = rendered_rules({"namespace": {"name": "images"}})
    assert all('namespace="images"' in rule["expr"] for rule in rules)
