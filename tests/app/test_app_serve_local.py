"""README command 1: ``ci/serve-local.sh`` serves the embedded model, prints a working curl line and the URL of
its Prometheus metrics, stops on Ctrl-C."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.serve_cluster import REPO_ROOT, embedded_model_dir, free_port

pytestmark = pytest.mark.ray


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def start_serve_local(port: int, log_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "SDXL_EMBEDDED_MODEL_DIR": str(embedded_model_dir()), "PYTHONUNBUFFERED": "1"}
    # Its own session, like a terminal job: Ctrl-C reaches the script, and its process group is all ours.
    return subprocess.Popen(
        [str(REPO_ROOT / "ci" / "serve-local.sh"), "--port", str(port), *extra],
        cwd=REPO_ROOT,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def images_counted(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("ray_sdxl_images_total{"))


def wait_for_banner(process: subprocess.Popen, log_path: Path) -> str:
    deadline = time.monotonic() + 240
    output = ""
    while "Ctrl-C stops" not in output:
        assert process.poll() is None, output
        assert time.monotonic() < deadline, output
        time.sleep(1)
        output = log_path.read_text()
    return output


def stop_with_ctrl_c(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=90) == 0
    deadline = time.monotonic() + 30
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(1)
    assert group_members(process.pid) == [], "processes started by serve-local.sh outlived Ctrl-C"


def test_serve_local_prints_a_curl_line_that_returns_a_png_stops_on_ctrl_c_and_restarts_at_once(tmp_path):
    port, metrics_port = free_port(), free_port()
    processes = []
    try:
        processes.append(start_serve_local(port, tmp_path / "first.log", "--metrics-port", str(metrics_port)))
        output = wait_for_banner(processes[0], tmp_path / "first.log")
        (url,) = re.findall(r'curl -o astronaut\.png "([^"]+)"', output)
        assert url.startswith(f"http://127.0.0.1:{port}/serve/imagine?prompt=an%20astronaut")
        (metrics_url,) = re.findall(r"metrics \(Prometheus[^)]*\): (\S+)", output)
        assert metrics_url == f"http://127.0.0.1:{metrics_port}/metrics"
        # A client that keeps its connection alive, as browsers and SDKs do: when the server stops, its
        # side of that connection lingers in TIME_WAIT on the port.
        with httpx.Client(timeout=120) as client:
            for _ in range(3):
                response = client.get(url)
                assert response.status_code == 200
                assert Image.open(io.BytesIO(response.content)).format == "PNG"
            # The printed endpoint serves the replica's metrics (Ray reports them every 10 s by default).
            deadline = time.monotonic() + 60
            while images_counted(metrics_url) < 3:
                assert time.monotonic() < deadline, httpx.get(metrics_url, timeout=10).text[-2000:]
                time.sleep(1)
            assert images_counted(metrics_url) == 3
            stop_with_ctrl_c(processes[0])
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/serve/healthz", timeout=5)

        # Run the command again at once, on the same port.
        processes.append(start_serve_local(port, tmp_path / "second.log"))
        wait_for_banner(processes[1], tmp_path / "second.log")
        assert httpx.get(url, timeout=120).status_code == 200
        stop_with_ctrl_c(processes[1])
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


def test_the_port_check_ignores_connections_in_time_wait_but_not_a_listening_server():
    import socket

    from app.local_run import port_is_free

    listener = socket.socket()
    # As Serve's proxy listens (SO_REUSEADDR, ray/serve/_private/http_util.py): Linux lets a later bind
    # with SO_REUSEADDR past TIME_WAIT connections only if the socket that left them had it too.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert not port_is_free("127.0.0.1", port)  # something listens: in use
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server closes first, so its end of the connection goes to TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    listener.close()
    plain = socket.socket()
    with pytest.raises(OSError):  # what a check without SO_REUSEADDR saw: "in use" for a minute
        plain.bind(("127.0.0.1", port))
    plain.close()
    assert port_is_free("127.0.0.1", port)
