"""A real Prometheus (Debian's package) for tests: started on a free loopback port with its own config and
data directory, queried through its HTTP API, stopped by its process id.

``prometheus_binary()`` / ``promtool_binary()``
    The Debian binaries; skip when absent on a developer machine (``ci/test.sh`` installs the package),
    fail under CI (``CI`` set), which must run these checks.

``prometheus_server(scrape_configs, workdir, *, rule_files=(), interval="1s")``
    Context manager yielding a :class:`PrometheusAPI` once ``/-/ready`` answers; scrapes and evaluates rules
    every ``interval``. Never listens anywhere but 127.0.0.1, never touches a system Prometheus.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import yaml

from tests.support.serve_cluster import free_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def _debian_binary(path: str) -> str:
    import pytest

    found = path if Path(path).is_file() else shutil.which(Path(path).name)
    if found:
        return found
    reason = f"{path} not installed (ci/test.sh installs Debian's prometheus package)"
    if os.environ.get("CI"):
        pytest.fail(reason + ", but CI must run these checks")
    pytest.skip(reason)


def prometheus_binary() -> str:
    return _debian_binary(PROMETHEUS)


def promtool_binary() -> str:
    return _debian_binary(PROMTOOL)


class PrometheusAPI:
    """The few calls of Prometheus's HTTP API (``/api/v1``) the tests make."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def _get(self, path: str, **params) -> dict:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}" if params else f"{self.base_url}{path}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant vector result of ``expr`` (each item: ``metric`` labels and ``value`` [ts, "v"])."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", **params)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return data["result"]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (None when the result is empty)."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr}: {len(result)} series"
        return float(result[0]["value"][1])

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {item["metric"].get(label, ""): float(item["value"][1]) for item in self.query(expr)}

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        data = self._get("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return data["result"]

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets")["activeTargets"]

    def rule_groups(self) -> list[dict]:
        return self._get("/api/v1/rules")["groups"]

    def wait_for(self, expr: str, predicate: Callable[[float | None], bool], timeout_s: float = 60) -> float | None:
        """Poll ``value(expr)`` until ``predicate`` holds; fail with the last value after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if predicate(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"{expr} did not reach the expected value within {timeout_s}s (last: {last})")


@contextlib.contextmanager
def prometheus_server(
    scrape_configs: list[dict], workdir: Path, *, rule_files: Iterable[Path] = (), interval: str = "1s"
) -> Iterator[PrometheusAPI]:
    binary = prometheus_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": scrape_configs,
        "rule_files": [str(path) for path in rule_files],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=2h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = PrometheusAPI(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited ({process.returncode}): {(workdir / 'prometheus.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{api.base_url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("prometheus did not become ready within 60s")
            time.sleep(0.2)
        yield api
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
