"""Render the chart with Helm's own engine (helm-python-sdk: Helm v4 Go SDK, no helm binary) and look
at the result the way a reviewer does: as Kubernetes objects.

Shared by the tests under tests/chart. The rendering itself is ``bench/chart_render.py`` (the
benchmarks render the same way): offline (``lookup`` returns nothing), values checked against
values.schema.json and validate.yaml first, exactly as ``helm install`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import helm_python
import yaml

from bench.chart_render import (  # noqa: F401 (re-exported for the chart tests)
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    REPO_ROOT,
    SCENARIO_DIR,
    chart,
    deep_merge,
    render_manifests,
    scenario_values,
)

SCHEMAS_DIR = REPO_ROOT.parent / "shared" / "schemas"

#: Every chart/ci/<name>-values.yaml, by <name>.
SCENARIOS = sorted(path.name.removesuffix("-values.yaml") for path in SCENARIO_DIR.glob("*-values.yaml"))

#: Kubernetes versions the chart claims (Chart.yaml kubeVersion >= 1.29) and kubernetes-validate ships.
OLDEST_KUBERNETES = "1.29.0"


def helm_binary() -> str:
    """A real `helm` (v4): ci/helm.sh installs it into .venv/bin; else one on PATH.

    Skips when there is none (a plain clone without npm), but fails under CI, which must run these checks.
    """
    import os
    import shutil

    import pytest

    local = REPO_ROOT / ".venv" / "bin" / "helm"
    found = str(local) if local.is_file() else shutil.which("helm")
    if found:
        return found
    reason = "no helm binary (ci/helm.sh installs one from npm); rendering is covered by the Helm v4 SDK"
    if os.environ.get("CI"):
        pytest.fail(reason + ", but CI must run the real binary")
    pytest.skip(reason)


def values_schema_generator():
    """``ci/values_schema.py`` (a script, not a package): the schema generator and values.yaml's comment parser."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("values_schema", REPO_ROOT / "ci" / "values_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def newest_kubernetes() -> str:
    import kubernetes_validate

    return kubernetes_validate.latest_version()


def set_values(expression: str) -> dict:
    """Values of a ``--set`` expression, parsed by Helm's own parser."""
    return helm_python.parse_set_string(expression)


@dataclass
class Rendered:
    files: dict[str, str]
    docs: list[dict] = field(default_factory=list)

    @property
    def notes(self) -> str:
        return next((text for path, text in self.files.items() if path.endswith("NOTES.txt")), "")

    def all(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [doc for doc in self.all(kind) if name is None or doc["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
        return found[0]

    def kinds(self) -> set[str]:
        return {doc["kind"] for doc in self.docs}

    @property
    def rayservice(self) -> dict:
        return self.one("RayService")

    @property
    def serve_config(self) -> dict:
        return yaml.safe_load(self.rayservice["spec"]["serveConfigV2"])

    def application(self, name: str = "sdxl") -> dict:
        apps = {app["name"]: app for app in self.serve_config["applications"]}
        return apps[name]

    @property
    def sdxl_deployment(self) -> dict:
        deployments = self.application("sdxl")["deployments"]
        assert [d["name"] for d in deployments] == ["SDXLService"]
        return deployments[0]

    @property
    def head_group(self) -> dict:
        return self.rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]

    @property
    def worker_group(self) -> dict:
        groups = self.rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        assert len(groups) == 1
        return groups[0]

    @property
    def worker_container(self) -> dict:
        return self.worker_group["template"]["spec"]["containers"][0]

    @property
    def head_container(self) -> dict:
        return self.head_group["template"]["spec"]["containers"][0]

    def advertised_resources(self) -> dict:
        """The worker node's custom Ray resources as the Ray autoscaler reads them from the group spec."""
        from ray.autoscaler._private.kuberay.autoscaling_config import _get_ray_resources_from_group_spec

        resources = _get_ray_resources_from_group_spec(self.worker_group, is_head=False)
        return {key: value for key, value in resources.items() if key not in ("CPU", "GPU", "TPU", "memory")}

    def pod_specs(self) -> dict[str, dict]:
        """Every pod spec the release creates: Ray head, Ray workers, the helm test pod."""
        specs = {"ray-head": self.head_group["template"]["spec"], "ray-worker": self.worker_group["template"]["spec"]}
        for pod in self.all("Pod"):
            specs[pod["metadata"]["name"]] = pod["spec"]
        return specs


def render(
    values: dict | None = None,
    *,
    scenario: str | None = None,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
    upgrade: bool = False,
) -> Rendered:
    files, docs = render_manifests(values, scenario=scenario, name=name, namespace=namespace, upgrade=upgrade)
    return Rendered(files=files, docs=docs)


def render_error(values: dict, *, scenario: str | None = None) -> str:
    """The message Helm gives for values the chart refuses (schema or validate.yaml)."""
    try:
        render(values, scenario=scenario)
    except (helm_python.HelmValuesError, helm_python.HelmRenderError) as error:
        return str(error)
    raise AssertionError(f"the chart rendered values it should refuse: {values}")
