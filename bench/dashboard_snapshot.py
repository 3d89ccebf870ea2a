"""The README's dashboard picture, from a real local run: docs/dashboard.png.

    .venv/bin/python bench/dashboard_snapshot.py                 # ~3-4 minutes on 2 cores
    .venv/bin/python bench/dashboard_snapshot.py --out /tmp/d.png --seconds 60

Starts the service on a local Ray (embedded model, Ray's metrics export on, Serve's latency buckets as the
chart sets them) and Debian's Prometheus on loopback scraping it as the chart's PodMonitor would (label
``namespace``), drives a few minutes of traffic (rising concurrency, some bad requests, a stretch past
``max_queued_requests`` for 503 backpressure), then draws every panel of the dashboard the chart renders
from Prometheus's ``query_range`` answers (tests/support/dashboard.py; Grafana itself is not installable
here). Nothing is made up: a panel without data says so (NeuronCore utilization: no neuron-monitor here).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import loadgen  # noqa: E402
from bench.comparison.config import PROMPTS  # noqa: E402

NAMESPACE = "sdxl"
#: (seconds share of the run, concurrency): quiet, busy, past the queue limit, quiet again.
PHASES = ((0.2, 1), (0.3, 4), (0.3, 16), (0.2, 2))


def requests_for(base: str):
    def factory(index: int):
        if index % 12 == 5:  # a client that gets a parameter wrong now and then
            return "GET", f"{base}/imagine?prompt=x&steps=0", {}
        if index % 12 == 9:
            return "POST", f"{base}/v1/images/generations", {"json": {"prompt": PROMPTS[index % 8], "n": 2}}
        size = {"width": 96, "height": 128} if index % 3 == 0 else {}
        query = urllib.parse.urlencode({"prompt": PROMPTS[index % len(PROMPTS)], **size})
        return "GET", f"{base}/imagine?{query}", {}

    return factory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/dashboard_snapshot.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180, help="length of the traffic (default 180)")
    parser.add_argument("--out", default=str(REPO / "docs" / "dashboard.png"))
    options = parser.parse_args(argv)

    from tests.chart.chartlib import render
    from tests.support.dashboard import dashboard_from_rendered, render_png
    from tests.support.prometheus import prometheus_server
    from tests.support.serve_cluster import fast_embedded_args, free_port, local_serve

    rendered = render({"monitoring": {"podMonitor": {"enabled": True}, "grafanaDashboard": {"enabled": True}}})
    env = {item["name"]: item["value"] for item in rendered.worker_container["env"] if "value" in item}
    os.environ["RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS"] = env["RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS"]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    metrics_port = free_port()
    path = rendered.one("PodMonitor")["spec"]["podMetricsEndpoints"][0]["path"]
    scrape = [
        {
            "job_name": "ray",
            "metrics_path": path,
            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"namespace": NAMESPACE}}],
        }
    ]
    with (
        tempfile.TemporaryDirectory() as workdir,
        prometheus_server(scrape, Path(workdir)) as prometheus,
        local_serve(
            fast_embedded_args(),
            metrics_export_port=metrics_port,
            deployment_options={"max_ongoing_requests": 4, "max_queued_requests": 6},
        ) as base,
    ):
        started = time.time()
        for share, concurrency in PHASES:
            # Clients that honour Retry-After after a 503 (capped at 1 s), as the README asks of them.
            run = loadgen.run_sync(
                requests_for(base),
                concurrency=concurrency,
                duration_s=share * options.seconds,
                timeout_s=120,
                backoff_on_503_s=1.0,
            )
            summary = loadgen.summarise(run)
            print(
                f"concurrency {concurrency:>2}: {summary['requests']} requests, statuses {summary['statuses']}",
                flush=True,
            )
        time.sleep(5)  # the last reports reach Prometheus
        out = render_png(
            prometheus,
            dashboard_from_rendered(rendered),
            started,
            time.time(),
            Path(options.out),
            rate_interval="20s",
            step=5,
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
