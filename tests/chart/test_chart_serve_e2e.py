"""End to end on a real Ray: the chart and the app agree.

The cpu-local scenario is rendered; its serveConfigV2 is deployed verbatim the way KubeRay does it
(PUT to the dashboard's /api/serve/applications/) on a local Ray node that advertises exactly the
resources the rendered worker group advertises (rayStartParams.resources and the container's CPU
limit). The only change to the rendered config is the Serve proxy's port: a free one instead of
8000, because tests share this machine (and so the web UI's api_url, which names that port). Then
Ray must have placed the replicas the chart promised for one node, a generation through Serve's
proxy must return a PNG that decodes, the web UI must serve its page under /ui, the chart's
`helm test` script must pass against it, and the serveConfigV2 of `helm upgrade --set replicas=1`
must rescale the running application in place.
"""

from __future__ import annotations

import copy
import io
import os
import secrets
import subprocess
import sys
import time

import httpx
import pytest
from ray._private.authentication_test_utils import reset_auth_token_state

from tests.chart.chartlib import render, set_values
from tests.support.serve_cluster import embedded_model_dir, free_port

pytestmark = pytest.mark.ray

DEPLOY_TIMEOUT_S = 240


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - keep polling until the deadline, report the last error
            last = error
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout_s}s (last error: {last!r})")


def override_proxy_port(config: dict, port: int) -> None:
    """The one change to the rendered serveConfigV2 (see the module docstring)."""
    config["http_options"]["port"] = port
    for application in config["applications"]:
        if application["import_path"] == "app.ui:build_ui_app":
            application["args"]["api_url"] = application["args"]["api_url"].replace(":8000/", f":{port}/")


@pytest.fixture(scope="module")
def rendered():
    return render(scenario="cpu-local")


@pytest.fixture(scope="module")
def serve_on_a_rendered_node(rendered):
    import ray
    from ray import serve

    node_resources = rendered.advertised_resources()
    node_cpus = int(rendered.worker_container["resources"]["limits"]["cpu"])
    config = copy.deepcopy(rendered.serve_config)
    proxy_port = free_port()
    override_proxy_port(config, proxy_port)
    dashboard_port = free_port()

    # What the pod's environment provides on EKS (the model cache), here the shared embedded model.
    saved_env = dict(os.environ)
    os.environ["SDXL_EMBEDDED_MODEL_DIR"] = str(embedded_model_dir())
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # authOptions.mode=token: KubeRay gives every Ray container RAY_AUTH_MODE and a generated
    # RAY_AUTH_TOKEN, and sends that token on its own dashboard calls. Same here.
    auth_mode = rendered.rayservice["spec"]["rayClusterConfig"]["authOptions"]["mode"]
    token = secrets.token_hex(16)
    os.environ["RAY_AUTH_MODE"] = auth_mode
    os.environ["RAY_AUTH_TOKEN"] = token
    auth = {"Authorization": f"Bearer {token}"} if auth_mode == "token" else {}
    # This process already read Ray's config at import: make it see the new auth settings.
    reset_auth_token_state()
    ray.init(
        num_cpus=node_cpus,
        resources=node_resources,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        object_store_memory=150 * 1024 * 1024,
        log_to_driver=False,
    )
    try:
        dashboard = f"http://127.0.0.1:{dashboard_port}"

        # KubeRay's call: PUT the whole serveConfigV2 (as JSON) to the head's dashboard.
        def put(body: dict, headers: dict) -> httpx.Response:
            return httpx.put(f"{dashboard}/api/serve/applications/", json=body, headers=headers, timeout=30)

        wait_for(lambda: put(config, auth).status_code == 200, 90, "the dashboard did not accept the Serve config")
        refused_without_token = put(config, {}).status_code

        names = [application["name"] for application in config["applications"]]

        def apps_running():
            statuses = serve.status().applications
            for name in names:
                status = statuses.get(name)
                if status is not None and status.status.value == "DEPLOY_FAILED":
                    raise AssertionError(f"deploy of {name} failed: {status.message}")
            return all(name in statuses and statuses[name].status.value == "RUNNING" for name in names)

        wait_for(apps_running, DEPLOY_TIMEOUT_S, f"applications {names} did not reach RUNNING")
        yield {
            "root": f"http://127.0.0.1:{proxy_port}",
            "base": f"http://127.0.0.1:{proxy_port}/serve",
            "node_resources": node_resources,
            "refused_without_token": refused_without_token,
            "redeploy": lambda body: put(body, auth),
            "proxy_port": proxy_port,
        }
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            os.environ.clear()
            os.environ.update(saved_env)
            reset_auth_token_state()


def test_ray_places_as_many_replicas_as_the_chart_promises_for_one_node(rendered, serve_on_a_rendered_node):
    import ray
    from ray import serve

    cores_per_replica = rendered.sdxl_deployment["ray_actor_options"]["resources"]["neuron_cores"]
    per_node = serve_on_a_rendered_node["node_resources"]["neuron_cores"] // cores_per_replica
    assert rendered.sdxl_deployment["num_replicas"] == per_node == 2
    assert f"{per_node} per node" in rendered.notes
    deployment = serve.status().applications["sdxl"].deployments["SDXLService"]
    assert deployment.replica_states.get("RUNNING") == per_node
    # Every NeuronCore the node advertises is held by a replica.
    assert ray.available_resources().get("neuron_cores", 0) == 0


def test_imagine_through_serves_proxy_returns_a_png_that_decodes(rendered, serve_on_a_rendered_node):
    from PIL import Image

    base = serve_on_a_rendered_node["base"]
    assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    response = httpx.get(f"{base}/imagine", params={"prompt": "a lighthouse at dawn", "seed": 3}, timeout=120)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    default_size = rendered.application()["args"]["image_sizes"][0]
    assert f"{image.width}x{image.height}" == default_size == response.headers["x-image-size"]


def test_the_web_ui_the_chart_deploys_serves_its_page_under_ui(rendered, serve_on_a_rendered_node):
    # What ui.enabled renders, deployed verbatim: its page and Gradio config answer under /ui, built
    # for that prefix (tests/ui drives the page itself in a browser).
    root = serve_on_a_rendered_node["root"]
    assert [app["name"] for app in rendered.serve_config["applications"]] == ["sdxl", "ui"]
    page = httpx.get(f"{root}/ui/", timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert httpx.get(f"{root}/ui/config", timeout=60).json()["root"] == f"{root}/ui"


def test_the_helm_test_pod_script_passes_against_the_deployed_service(rendered, serve_on_a_rendered_node):
    container = rendered.one("Pod")["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    env["BASE_URL"] = serve_on_a_rendered_node["base"]
    result = subprocess.run(
        [sys.executable, "-c", container["args"][0]],
        env={**env, "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: generated a 128x96 PNG" in result.stdout


def test_the_dashboard_refuses_a_serve_deploy_without_the_clusters_token(serve_on_a_rendered_node):
    # The chart turns on Ray token auth: the dashboard (which runs arbitrary code) refuses callers
    # without the token, while Serve's HTTP port above answers without it.
    assert serve_on_a_rendered_node["refused_without_token"] in (401, 403)


def test_helm_upgrade_of_replicas_rescales_serve_in_place(serve_on_a_rendered_node):
    # Last in the module: it changes the deployment. What `helm upgrade --set replicas=1` renders,
    # applied the way KubeRay applies a serveConfigV2 change to the running cluster.
    import ray
    from ray import serve

    upgraded = render(set_values("replicas=1"), scenario="cpu-local", upgrade=True)
    config = copy.deepcopy(upgraded.serve_config)
    override_proxy_port(config, serve_on_a_rendered_node["proxy_port"])
    assert serve_on_a_rendered_node["redeploy"](config).status_code == 200

    def scaled_down():
        deployment = serve.status().applications["sdxl"].deployments["SDXLService"]
        return deployment.replica_states == {"RUNNING": 1} and ray.available_resources().get("neuron_cores") == 1

    wait_for(scaled_down, 120, "Serve did not scale SDXLService to 1 replica")
    response = httpx.get(
        f"{serve_on_a_rendered_node['base']}/imagine", params={"prompt": "after the upgrade"}, timeout=120
    )
    assert response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n"
