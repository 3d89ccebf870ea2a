"""README command 1: ``ci/serve-local.sh`` serves the embedded model, prints a working curl line, stops on Ctrl-C."""

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


def test_serve_local_prints_a_curl_line_that_returns_a_png_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    env = {**os.environ, "SDXL_EMBEDDED_MODEL_DIR": str(embedded_model_dir()), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "serve-local.log").open("w+")
    # Its own session, like a terminal job: Ctrl-C reaches the script, and its process group is all ours.
    process = subprocess.Popen([str(REPO_ROOT / "ci" / "serve-local.sh"), "--port", str(port)], cwd=REPO_ROOT,
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        output = ""
        while "Ctrl-C stops" not in output:
            assert process.poll() is None, output
            assert time.monotonic() < deadline, output
            time.sleep(1)
            output = (tmp_path / "serve-local.log").read_text()
        (url,) = re.findall(r'curl -o astronaut\.png "([^"]+)"', output)
        assert url.startswith(f"http://127.0.0.1:{port}/serve/imagine?prompt=an%20astronaut")
        response = httpx.get(url, timeout=120)
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).format == "PNG"

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
        deadline = time.monotonic() + 30
        while group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(1)
        assert group_members(process.pid) == [], "processes started by serve-local.sh outlived Ctrl-C"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/serve/healthz", timeout=5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
