"""Run the service on this machine: ``python -m app.local_run`` (what ``ci/serve-local.sh`` starts).

Starts a private Ray (no dashboard) and Serve's HTTP proxy on ``--host:--port``, deploys
``app.main:build_app`` at ``/serve`` exactly as the chart does (same builder, same args), optionally the
web UI (``app.ui:build_ui_app``) at ``/ui``, prints a working curl line and the Prometheus endpoint of
Ray's metrics (``--metrics-port``, the chart's metrics-export-port 8080 by default), and stops everything
it started on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from app.config import EMBEDDED_MODEL, InvalidAppArgs, parse_app_args
from app.embedded_model import EMBEDDED_LOCAL_ARGS

API_PREFIX = "/serve"
UI_PREFIX = "/ui"
README_PROMPT = "an astronaut is dancing on green grass, sunlit"
#: Serve's per-request time limit here: the chart's serve.requestTimeoutS default (a test keeps them equal).
REQUEST_TIMEOUT_S = 300
#: Ray's Prometheus endpoint: the chart's metrics-export-port (a test keeps them equal).
METRICS_PORT = 8080


def parse_cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ci/serve-local.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--model-id",
        default=EMBEDDED_MODEL,
        help="'embedded' (default), a Hub repo id or a local save_pretrained directory",
    )
    parser.add_argument("--backend", default="cpu", choices=("cpu", "cuda", "neuron"), help="default cpu")
    parser.add_argument("--ui", action="store_true", help="also serve the web UI at /ui")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"port of Ray's Prometheus endpoint /metrics (default {METRICS_PORT}, as in the chart; "
        "a free one when that is taken)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other app argument (VALUE parsed as JSON when it can be), e.g. "
        "--set default_steps=10 --set 'image_sizes=[\"512x512\"]'",
    )
    return parser.parse_args(argv)


def app_args_from_cli(cli: argparse.Namespace) -> dict:
    args: dict = {"model_id": cli.model_id, "backend": cli.backend}
    if cli.model_id == EMBEDDED_MODEL:
        args.update(EMBEDDED_LOCAL_ARGS)
    for item in cli.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


def port_is_free(host: str, port: int) -> bool:
    """Whether Serve's proxy could listen on ``host:port`` now.

    Serve's proxy binds with SO_REUSEADDR and SO_REUSEPORT (Ray 2.60: ray/serve/_private/proxy.py
    SOCKET_REUSE_PORT_ENABLED, http_util.set_socket_reuse_port), so the connections of a server that
    just stopped, lingering in TIME_WAIT on the port, do not stop it; they do stop a plain bind for a
    minute. Binding with SO_REUSEADDR alone (SO_REUSEPORT would share the port with a live server)
    fails only while something listens there.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become healthy within {timeout_s:.0f}s")


def _stop(signum, frame):
    raise KeyboardInterrupt


def stop_leftover_ray_processes() -> None:
    """Stop processes Ray left in this process group after ``ray.shutdown()``.

    Ray 2.60 can leave its runtime-env agent running (reparented to init). Only when this process leads
    its process group (as when started from a shell) is every other member of the group ours.
    """
    own = os.getpid()
    if os.getpgid(0) != own:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            # Field 5 of /proc/PID/stat is the process group; the command name (field 2) may hold spaces.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == own:
                os.kill(int(entry.name), signal.SIGTERM)
        except (OSError, IndexError, ValueError):
            continue


def main(argv: list[str]) -> int:
    cli = parse_cli(argv)
    args = app_args_from_cli(cli)
    try:
        parse_app_args(args)  # fail before starting anything, with the field named
    except InvalidAppArgs as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not port_is_free(cli.host, cli.port):
        print(f"error: port {cli.port} on {cli.host} is in use; pick another with --port", file=sys.stderr)
        return 2
    metrics_port = cli.metrics_port or METRICS_PORT
    if not port_is_free("0.0.0.0", metrics_port):
        if cli.metrics_port:
            print(f"error: metrics port {metrics_port} is in use; pick another with --metrics-port", file=sys.stderr)
            return 2
        metrics_port = free_port()
    if cli.model_id == EMBEDDED_MODEL:
        from app.embedded_model import EMBEDDED_DIR_ENV, EMBEDDED_MODEL_VERSION, ensure_embedded_model

        # Share the checkout's copy with the test suite (set before Ray starts: replicas inherit it).
        os.environ.setdefault(
            EMBEDDED_DIR_ENV, str(Path.cwd() / ".cache" / f"embedded-model-v{EMBEDDED_MODEL_VERSION}")
        )
        print(f"embedded model: {ensure_embedded_model()}")
    build_ui_app = None
    if cli.ui:
        try:
            from app.ui import build_ui_app
        except ImportError as error:
            print(f"error: --ui needs the project's ui extra (pip install -e '.[ui]'): {error}", file=sys.stderr)
            return 2

    import ray
    from ray import serve

    from app.main import build_app

    # SIGTERM (e.g. from a process manager) stops as cleanly as Ctrl-C.
    # Ctrl-C and SIGTERM (e.g. from a process manager) both stop everything; SIGINT is installed
    # explicitly because a shell starting us in the background would otherwise leave it ignored.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    # Replica logs stay in Ray's session directory (/tmp/ray/session_latest/logs/serve/); a failed
    # deploy still raises here with its reason.
    # address="local": always a private Ray, never one that RAY_ADDRESS or `ray start` left on this machine
    # (Ctrl-C shuts Serve down, which must not touch anybody else's applications).
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        _metrics_export_port=metrics_port,
    )
    try:
        # No client waits forever behind a stuck generation: past the limit Serve answers 408.
        serve.start(http_options={"host": cli.host, "port": cli.port, "request_timeout_s": REQUEST_TIMEOUT_S})
        base = f"http://{'127.0.0.1' if cli.host in ('0.0.0.0', '::') else cli.host}:{cli.port}"
        serve.run(build_app(args), name="sdxl", route_prefix=API_PREFIX)
        wait_until_healthy(base + API_PREFIX + "/healthz")
        if build_ui_app is not None:
            serve.run(build_ui_app({"api_url": base + API_PREFIX}), name="ui", route_prefix=UI_PREFIX)
        query = urllib.parse.urlencode({"prompt": README_PROMPT}, quote_via=urllib.parse.quote, safe=",")
        print()
        print(f"SDXL service ({args['backend']}, model {args['model_id']}) is up at {base}{API_PREFIX}")
        print(f'  curl -o astronaut.png "{base}{API_PREFIX}/imagine?{query}"')
        print(f"  curl {base}{API_PREFIX}/info")
        # Ray's metrics agent listens on every interface of the node; loopback works wherever the host does.
        print(f"  metrics (Prometheus, ray_sdxl_* and Ray's): http://127.0.0.1:{metrics_port}/metrics")
        if build_ui_app is not None:
            print(f"  web UI: {base}{UI_PREFIX}/")
        print("Ctrl-C stops the service and Ray.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping...")
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            stop_leftover_ray_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
