"""checkov on the rendered chart: zero failed checks, except those skipped with a written reason in
chart/.checkov.yaml. checkov knows nothing of RayService, so the RayService's head and worker pod
templates are also handed to it as Pods: the Ray containers are what matters most."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.chart.chartlib import CHART_DIR, REPO_ROOT, render

CONFIG = CHART_DIR / ".checkov.yaml"
INSTALL = REPO_ROOT / "ci" / "checkov.sh"
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture(scope="module")
def checkov() -> str:
    # Installs into .venv-checkov (its pins clash with .venv); quick when already installed.
    result = subprocess.run([str(INSTALL)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0 and not CHECKOV.exists():
        pytest.skip(f"could not create .venv-checkov with ci/checkov.sh (no package index?): {result.stderr[-500:]}")
    assert result.returncode == 0, result.stderr
    return str(CHECKOV)


def manifests(rendered, directory):
    for index, doc in enumerate(rendered.docs):
        (directory / f"{index:02d}-{doc['kind'].lower()}.yaml").write_text(yaml.safe_dump(doc))
    namespace = rendered.rayservice["metadata"]["namespace"]
    for group_name, group in (("head", rendered.head_group), ("worker", rendered.worker_group)):
        template = group["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"ray-{group_name}", "namespace": namespace, **template.get("metadata", {})},
            "spec": template["spec"],
        }
        (directory / f"ray-{group_name}-pod.yaml").write_text(yaml.safe_dump(pod))


def run_checkov(checkov: str, directory) -> dict:
    result = subprocess.run(
        [checkov, "-d", str(directory), "--config-file", str(CONFIG), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize("scenario", [None, "karpenter"], ids=["defaults", "karpenter-everything-on"])
def test_checkov_finds_no_failed_check_in_the_rendered_chart(checkov, tmp_path, scenario):
    rendered = render(scenario=scenario)
    manifests(rendered, tmp_path)
    report = run_checkov(checkov, tmp_path)
    failed = [
        f"{check['check_id']} {check['check_name']} ({check['resource']})"
        for check in report["results"]["failed_checks"]
    ]
    assert not failed
    assert report["summary"]["parsing_errors"] == 0
    # The Ray pods and the test pod were really scanned.
    scanned = {check["resource"] for check in report["results"]["passed_checks"]}
    # (The karpenter scenario creates and uses namespace sdxl-serving.)
    namespace = rendered.rayservice["metadata"]["namespace"]
    assert {
        f"Pod.{namespace}.ray-head",
        f"Pod.{namespace}.ray-worker",
        f"Pod.{namespace}.sdxl-test-generate",
    } <= scanned


def test_every_skipped_check_has_a_written_reason():
    text = CONFIG.read_text()
    skipped = yaml.safe_load(text)["skip-check"]
    assert skipped
    for check_id in skipped:
        reason = re.search(rf"^\s*#\s*{re.escape(check_id)}:\s*(.+)$", text, re.MULTILINE)
        assert reason and len(reason.group(1)) > 40, f"{check_id} is skipped without a reason"
