"""The chart rendered with Helm's own engine (helm-python-sdk: the Helm v4 Go SDK, no helm binary).

One place for what the benchmarks and the chart tests both do: load a ``chart/ci/<name>-values.yaml``
scenario, layer values over it the way repeated ``-f`` files do, and render. Rendering is offline
(``lookup`` returns nothing) and checks the values against values.schema.json and validate.yaml first,
as ``helm install`` does, so refused values raise Helm's own error.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = REPO_ROOT / "chart"
SCENARIO_DIR = CHART_DIR / "ci"
RELEASE = "sdxl"
NAMESPACE = "sdxl"


@functools.lru_cache(maxsize=1)
def chart():
    import helm_python

    return helm_python.Chart.load(CHART_DIR)


def scenario_values(name: str) -> dict:
    """The values of ``chart/ci/<name>-values.yaml``."""
    import yaml

    return yaml.safe_load((SCENARIO_DIR / f"{name}-values.yaml").read_text()) or {}


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` over ``base``: maps merge key by key, anything else (lists included) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render_manifests(
    values: dict | None = None,
    *,
    scenario: str | None = None,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
    upgrade: bool = False,
) -> tuple[dict[str, str], list[dict]]:
    """``(files, objects)``: every rendered file by template path, and the Kubernetes objects in them."""
    import yaml

    merged = deep_merge(scenario_values(scenario) if scenario else {}, values or {})
    files = chart().render(merged, name=name, namespace=namespace, is_install=not upgrade, is_upgrade=upgrade)
    objects = [
        doc
        for path, text in sorted(files.items())
        if path.endswith((".yaml", ".yml"))  # NOTES.txt and _helpers.tpl are not manifests
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return files, objects


def render_rayservice(values: dict | None = None, *, scenario: str | None = None) -> dict:
    """The one RayService the chart renders for ``values`` over ``scenario``."""
    _, objects = render_manifests(values, scenario=scenario)
    (rayservice,) = [doc for doc in objects if doc.get("kind") == "RayService"]
    return rayservice


def serve_config(rayservice: dict) -> dict:
    """The Serve config (serveConfigV2) a RayService carries, parsed."""
    import yaml

    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])
