"""Each chart/ci/*-values.yaml scenario lints cleanly with Helm's linter and renders objects the API
server would accept: built-in kinds against the oldest and newest Kubernetes the chart claims
(kubernetes-validate), custom resources against the operators' CRD schemas (../shared/schemas)."""

from __future__ import annotations

import json
import subprocess

import helm_python
import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft7Validator

from tests.chart.chartlib import (
    CHART_DIR,
    NAMESPACE,
    OLDEST_KUBERNETES,
    RELEASE,
    SCENARIO_DIR,
    SCENARIOS,
    SCHEMAS_DIR,
    helm_binary,
    newest_kubernetes,
    render,
    scenario_values,
)

CUSTOM_GROUPS = {"ray.io", "karpenter.sh", "karpenter.k8s.aws", "monitoring.coreos.com"}
EXPECTED_SCENARIOS = {"alb", "autoscaling", "cpu-local", "default", "fault-tolerance", "karpenter", "servicemonitor"}


def is_custom(doc: dict) -> bool:
    return doc["apiVersion"].split("/")[0] in CUSTOM_GROUPS


def test_chart_claims_the_oldest_kubernetes_it_is_validated_against():
    chart_yaml = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart_yaml["kubeVersion"] == f">={OLDEST_KUBERNETES}-0"


def test_every_documented_scenario_exists():
    assert EXPECTED_SCENARIOS <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("kube_version", [OLDEST_KUBERNETES, newest_kubernetes()])
def test_scenario_lints_without_warnings(scenario, kube_version):
    report = helm_python.lint(
        CHART_DIR, scenario_values(scenario), strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}"
    )
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); warnings (2) and errors (3) fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("kube_version", [OLDEST_KUBERNETES, newest_kubernetes()])
def test_scenario_built_in_objects_are_valid_kubernetes(scenario, kube_version):
    built_in = [doc for doc in render(scenario=scenario).docs if not is_custom(doc)]
    assert built_in
    for doc in built_in:
        kubernetes_validate.validate(doc, kube_version, strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_custom_resources_match_their_crd_schemas(scenario):
    if not SCHEMAS_DIR.is_dir():
        pytest.skip(f"CRD schemas not found at {SCHEMAS_DIR} (they live beside the repository)")
    custom = [doc for doc in render(scenario=scenario).docs if is_custom(doc)]
    assert any(doc["kind"] == "RayService" for doc in custom)
    for doc in custom:
        group, version = doc["apiVersion"].split("/")
        schema = json.loads((SCHEMAS_DIR / group / f"{doc['kind'].lower()}_{version}.json").read_text())
        errors = sorted(Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, [f"{doc['kind']}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_namespaced_object_lands_in_the_one_release_namespace(scenario):
    rendered = render(scenario=scenario)
    cluster_scoped = {"Namespace", "NodePool", "EC2NodeClass"}
    values = scenario_values(scenario)
    target = values.get("namespace", {}).get("name") or NAMESPACE
    # The one exception: the Grafana dashboard goes where Grafana's sidecar looks, when that is said.
    dashboard_namespace = values.get("monitoring", {}).get("grafanaDashboard", {}).get("namespace") or target
    for doc in rendered.docs:
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"]
        elif doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboard"):
            assert doc["metadata"]["namespace"] == dashboard_namespace
        else:
            assert doc["metadata"]["namespace"] == target, doc["kind"]


def test_namespace_is_rendered_only_when_asked_and_enforces_restricted_pod_security():
    assert "Namespace" not in render().kinds()
    namespace = render(scenario="karpenter").one("Namespace")
    # Not the release namespace "sdxl", which Helm creates and stores the release in.
    assert namespace["metadata"]["name"] == "sdxl-serving"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def run_helm(*args: str, tmp_path) -> str:
    """Run the real helm offline, with its config, cache and data kept out of $HOME."""
    import os

    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
    }
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_binary_renders_the_same_objects(scenario, tmp_path):
    values_file = SCENARIO_DIR / f"{scenario}-values.yaml"
    stdout = run_helm("template", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "-f", str(values_file), tmp_path=tmp_path)
    from_binary = [doc for doc in yaml.safe_load_all(stdout) if doc]
    key = lambda doc: (doc["kind"], doc["metadata"]["name"])  # noqa: E731
    assert sorted(from_binary, key=key) == sorted(render(scenario=scenario).docs, key=key)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_binary_lints_the_scenario_strictly(scenario, tmp_path):
    values_file = SCENARIO_DIR / f"{scenario}-values.yaml"
    stdout = run_helm("lint", "--strict", str(CHART_DIR), "-n", NAMESPACE, "-f", str(values_file), tmp_path=tmp_path)
    assert "1 chart(s) linted, 0 chart(s) failed" in stdout
    assert "[WARNING]" not in stdout and "[ERROR]" not in stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_install_dry_run_prints_the_notes_the_tests_check(scenario, tmp_path):
    values_file = SCENARIO_DIR / f"{scenario}-values.yaml"
    stdout = run_helm(
        "install",
        RELEASE,
        str(CHART_DIR),
        "-n",
        NAMESPACE,
        "-f",
        str(values_file),
        "--dry-run=client",
        tmp_path=tmp_path,
    )
    printed = stdout.split("NOTES:\n", 1)[1]
    assert printed.strip() == render(scenario=scenario).notes.strip()


def test_helm_binary_is_helm_4(tmp_path):
    assert run_helm("version", "--short", tmp_path=tmp_path).startswith("v4.")
