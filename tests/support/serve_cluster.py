"""A real local Ray Serve for tests: one small Ray cluster, the app deployed exactly as the chart does.

Public API (kept small; the UI, chart and reliability tests import it):

``local_serve(app_args, *, deployment_options=None, neuron_cores=0, num_cpus=2, extra_apps=(), env=None,
request_timeout_s=None, metrics_export_port=None)``
    Context manager. Starts Ray (no dashboard) and Serve's HTTP proxy on 127.0.0.1 at a free port,
    deploys ``app.main:build_app`` with ``app_args`` at route prefix ``/serve`` the way a RayService
    does (a serveConfigV2-shaped config: the controller imports the builder and validates the args),
    waits until ``GET /serve/healthz`` answers 200, and yields the API's base URL as a
    :class:`ServeURL` (a ``str`` such as ``http://127.0.0.1:PORT/serve``; ``.root`` is
    ``http://127.0.0.1:PORT``). Shuts Serve and Ray down on exit. Use it from a *module*-scoped fixture.

    ``deployment_options``: overrides for the ``SDXLService`` deployment, as in serveConfigV2
    (``max_ongoing_requests``, ``max_queued_requests``, ``ray_actor_options`` ...).
    ``extra_apps``: more serveConfigV2 applications (``{"name", "route_prefix", "import_path", "args"}``),
    e.g. the UI; the helper fills ``{root}`` in string args with the root URL.
    ``env``: environment variables for every Ray worker (e.g. an API key).
    ``request_timeout_s``: the proxy's per-request time limit (``http_options.request_timeout_s``), after
    which it answers 408.
    ``metrics_export_port``: the port of the node's Prometheus endpoint (``/metrics``; the chart's
    ``metrics-export-port``); metrics then reach it within about a second (``metrics_report_interval_ms``
    1000, Ray's floor, instead of its default 10000).

``deploy_config(applications, timeout_s=...)``
    Inside ``local_serve``: apply a new set of applications (replacing the running set) and return
    ``{app_name: (status, message)}`` once each is RUNNING or DEPLOY_FAILED (``message`` joins the
    application's and its deployments' messages: a replica constructor's exception lands in the latter).

``api_application(app_args, deployment_options=None, *, name="sdxl", route_prefix="/serve")``
    The serveConfigV2 application entry for the API (use it in ``extra_apps`` for a second, differently
    configured copy of the API at another route prefix).

``fast_embedded_args(**overrides)``
    App args for the embedded model that keep each generation ~0.1-0.3 s on a shared CPU; its sizes
    (``TEST_SIZE``, ``TEST_SIZE_TRANSPOSED``) are not square.

``embedded_model_dir()``
    The embedded model, generated once under ``<repo>/.cache/`` (git-ignored) and shared by all tests.

``free_port()``
    A currently free loopback TCP port.
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: ``fast_embedded_args``' default size and its transpose, as (width, height) (app.embedded_model's sizes).
TEST_SIZE = (128, 96)
TEST_SIZE_TRANSPOSED = (96, 128)
API_APP_NAME = "sdxl"
API_ROUTE_PREFIX = "/serve"


class ServeURL(str):
    """The API's base URL (``http://127.0.0.1:PORT/serve``); ``.root`` is the proxy's root URL."""

    root: str

    def __new__(cls, root: str, prefix: str = API_ROUTE_PREFIX) -> ServeURL:
        url = super().__new__(cls, root + prefix)
        url.root = root
        return url


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_model_dir() -> Path:
    """Generate (once, atomically) and return the embedded model directory under ``<repo>/.cache``."""
    from app.embedded_model import EMBEDDED_MODEL_VERSION, ensure_embedded_model

    return ensure_embedded_model(REPO_ROOT / ".cache" / f"embedded-model-v{EMBEDDED_MODEL_VERSION}")


def fast_embedded_args(**overrides) -> dict:
    """Args for the embedded model sized for tests: its local sizes and steps, a short batch wait."""
    from app.embedded_model import EMBEDDED_LOCAL_ARGS

    args = {
        "model_id": "embedded",
        "backend": "cpu",
        **EMBEDDED_LOCAL_ARGS,
        "max_steps": 50,
        "batch_wait_timeout_s": 0.02,
        "warmup": True,
    }
    args.update(overrides)
    return args


def api_application(
    app_args: dict,
    deployment_options: dict | None = None,
    *,
    name: str = API_APP_NAME,
    route_prefix: str = API_ROUTE_PREFIX,
) -> dict:
    """The API application as the chart writes it into serveConfigV2 (another name/prefix for a second copy)."""
    application = {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": "app.main:build_app",
        "args": dict(app_args),
    }
    if deployment_options:
        application["deployments"] = [{"name": "SDXLService", **deployment_options}]
    return application


def _fill_root(value, root: str):
    if isinstance(value, str):
        return value.replace("{root}", root)
    if isinstance(value, dict):
        return {key: _fill_root(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_root(item, root) for item in value]
    return value


def deploy_config(applications: list[dict], timeout_s: float = 180.0) -> dict[str, tuple[str, str]]:
    """Apply ``applications`` (serveConfigV2 ``applications`` entries) and wait for each to settle."""
    from ray import serve
    from ray.serve.context import _get_global_client  # what the dashboard's REST API (and KubeRay) drive
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema(applications=applications))
    names = {application["name"] for application in applications}
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = serve.status().applications
        # ApplicationStatus is a str enum: compare by value.
        settled = {
            name: (statuses[name].status.value, _full_message(statuses[name]))
            for name in names
            if name in statuses and statuses[name].status.value in ("RUNNING", "DEPLOY_FAILED")
        }
        if len(settled) == len(names):
            return settled
        if time.monotonic() > deadline:
            current = {name: statuses[name].status.value for name in names if name in statuses}
            raise TimeoutError(f"applications did not settle within {timeout_s}s: {current}")
        time.sleep(0.5)


def _full_message(app_status) -> str:
    # A replica that fails in its constructor leaves the reason on the deployment, not the application.
    parts = [app_status.message] + [
        f"{name}: {deployment.message}" for name, deployment in app_status.deployments.items() if deployment.message
    ]
    return "\n".join(part for part in parts if part)


def wait_healthy(base_url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last = error
        time.sleep(0.3)
    raise TimeoutError(f"{base_url}/healthz did not answer 200 within {timeout_s}s (last: {last})")


@contextlib.contextmanager
def local_serve(
    app_args: dict,
    *,
    deployment_options: dict | None = None,
    neuron_cores: int = 0,
    num_cpus: int = 2,
    extra_apps: Iterable[dict] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
    request_timeout_s: float | None = None,
    metrics_export_port: int | None = None,
) -> Iterator[ServeURL]:
    import ray
    from ray import serve

    worker_env = {
        # Every replica finds the shared, already generated embedded model instead of building its own.
        "SDXL_EMBEDDED_MODEL_DIR": str(embedded_model_dir()),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(env or {}),
    }
    metrics = {}
    if metrics_export_port is not None:
        metrics = {"_metrics_export_port": metrics_export_port, "_system_config": {"metrics_report_interval_ms": 1000}}
    ray.init(
        address="local",  # a private Ray, never one already running on the machine
        include_dashboard=False,
        num_cpus=num_cpus,
        resources={"neuron_cores": neuron_cores} if neuron_cores else None,
        object_store_memory=150 * 1024 * 1024,
        runtime_env={"env_vars": worker_env},
        log_to_driver=False,
        **metrics,
    )
    try:
        port = free_port()
        http_options = {"host": "127.0.0.1", "port": port}
        if request_timeout_s is not None:
            http_options["request_timeout_s"] = request_timeout_s  # as the chart's serve.requestTimeoutS
        serve.start(http_options=http_options)
        url = ServeURL(f"http://127.0.0.1:{port}")
        applications = [api_application(app_args, deployment_options)]
        applications += [_fill_root(dict(extra), url.root) for extra in extra_apps]
        statuses = deploy_config(applications, timeout_s=timeout_s)
        failed = {name: message for name, (status, message) in statuses.items() if status != "RUNNING"}
        if failed:
            raise RuntimeError(f"deploy failed: {failed}")
        wait_healthy(url, timeout_s=timeout_s)
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
