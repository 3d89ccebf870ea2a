"""The chart's monitoring against the real thing: a real Prometheus (Debian's) scrapes a local Ray run's
metrics endpoint, as the chart's PodMonitor does, while known requests reach the service; then the
replicas' counters and histograms, Serve's own series, every dashboard panel and every alert expression
are asked through Prometheus's HTTP API.

One local Ray (the embedded model, with the chart's Serve latency buckets) and one Prometheus for the
module. The scrape carries the label the PodMonitor adds (``namespace``), so the dashboard and rules the
chart renders for namespace ``sdxl`` select the series as they would on a cluster. A second scrape target
serves a stand-in of neuron-monitor's Prometheus exporter (its metric and label names; no Neuron device
here), so the NeuronCore panel's query is evaluated against that shape too.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from tests.chart.chartlib import render
from tests.support.dashboard import dashboard_from_rendered, panel_queries, render_png
from tests.support.prometheus import prometheus_server
from tests.support.serve_cluster import REPO_ROOT, fast_embedded_args, free_port, local_serve

pytestmark = pytest.mark.ray

NAMESPACE = "sdxl"
MONITORING = {
    "monitoring": {
        "podMonitor": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
        "prometheusRule": {"enabled": True},
    }
}
#: A prompt that must never reach a log (access log without logPrompts, and nothing else either).
SECRET_PROMPT = "a portrait of Jane Q. Example at 12 Private Road"
#: Burst (sent twice) against max_ongoing_requests 4 + max_queued_requests 2: the rest is Serve's 503 backpressure.
BURST = 16


def _neuroncore_utilization_sample(neuroncore: str, value: str) -> str:
    """One ``neuroncore_utilization_ratio`` sample line with neuron-monitor-prometheus.py's label names."""
    labels = {
        "availability_zone": "us-west-2a",
        "instance_id": "i-0123456789abcdef0",
        "instance_name": "",
        "instance_type": "inf2.48xlarge",
        "neuroncore": neuroncore,
        "region": "us-west-2",
        "runtime_tag": "1",
        "subnet_id": "subnet-0",
    }
    label_set = ",".join(f'{name}="{label}"' for name, label in labels.items())
    return f"neuroncore_utilization_ratio{{{label_set}}} {value}\n"


#: Stand-in of neuron-monitor-prometheus.py's output: its metric and label names, our values.
NEURON_MONITOR_TEXT = (
    "# HELP neuroncore_utilization_ratio NeuronCore utilization ratio\n"
    "# TYPE neuroncore_utilization_ratio gauge\n"
    + _neuroncore_utilization_sample("0", "0.75")
    + _neuroncore_utilization_sample("1", "0.25")
)


class _NeuronMonitorStandIn(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = NEURON_MONITOR_TEXT.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def send_known_traffic(base: str, prometheus) -> dict:
    """The requests whose counts the assertions expect; returns what the client saw."""
    seen = {"statuses": Counter(), "request_ids": []}
    with httpx.Client(timeout=120) as client:

        def get(path, **params):
            response = client.get(base + path, params=params)
            seen["statuses"][response.status_code] += 1
            seen["request_ids"].append(response.headers.get("x-request-id"))
            return response

        def post(body, **kwargs):
            response = (
                client.post(base + "/v1/images/generations", **kwargs)
                if kwargs
                else client.post(base + "/v1/images/generations", json=body)
            )
            seen["statuses"][response.status_code] += 1
            return response

        for seed in range(5):
            assert get("/imagine", prompt=SECRET_PROMPT, seed=seed).status_code == 200
        assert get("/imagine", prompt=SECRET_PROMPT, output_format="jpeg").status_code == 200
        for _ in range(2):
            assert post({"prompt": SECRET_PROMPT, "n": 2, "seed": 7}).status_code == 200
        for _ in range(3):
            assert get("/imagine", prompt="x", steps=0).json()["error"]["code"] == "out_of_range"
        for _ in range(2):
            assert get("/imagine", prompt="x", bogus=1).json()["error"]["code"] == "unknown_parameter"
        invalid = post(None, content=b"{", headers={"Content-Type": "application/json"})
        assert invalid.json()["error"]["code"] == "invalid_json"
        assert get("/no-such-route").json()["error"]["code"] == "not_found"
        for _ in range(3):  # probes: not metered
            assert client.get(base + "/healthz").status_code == 200
        assert client.get(base + "/info").status_code == 200

    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            params = {"prompt": SECRET_PROMPT, "width": 96, "height": 128}
            responses = await asyncio.gather(*(client.get(base + "/imagine", params=params) for _ in range(BURST)))
        return Counter(response.status_code for response in responses)

    # Two bursts, the second once Prometheus has seen the first: sustained backpressure, whose rate() is not 0
    # (a counter that appears with its final value shows no increase).
    seen["burst"] = asyncio.run(burst())
    prometheus.wait_for(
        f'sum(ray_serve_num_http_requests_total{{namespace="{NAMESPACE}", status_code="503"}})',
        lambda value: (value or 0) == seen["burst"][503],
    )
    seen["burst"] += asyncio.run(burst())
    assert set(seen["burst"]) <= {200, 503} and seen["burst"][503] > 0 and seen["burst"][200] > 0, seen["burst"]
    return seen


@pytest.fixture(scope="module")
def rendered():
    return render(MONITORING)


@pytest.fixture(scope="module")
def live(rendered, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prometheus")
    rules_file = workdir / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rendered.one("PrometheusRule")["spec"]["groups"]}))
    pod_monitor = rendered.one("PodMonitor")["spec"]["podMetricsEndpoints"][0]
    env = {item["name"]: item["value"] for item in rendered.worker_container["env"] if "value" in item}
    metrics_port = free_port()

    neuron = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NeuronMonitorStandIn)
    threading.Thread(target=neuron.serve_forever, daemon=True).start()
    scrape_configs = [
        # What the PodMonitor makes of a Ray pod: its metrics port and path, the pod's namespace as a label.
        {
            "job_name": "ray",
            "metrics_path": pod_monitor["path"],
            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"namespace": NAMESPACE}}],
        },
        {
            "job_name": "neuron-monitor",
            "static_configs": [
                {"targets": [f"127.0.0.1:{neuron.server_address[1]}"], "labels": {"namespace": "neuron"}}
            ],
        },
    ]
    # Serve's proxy reads its latency buckets from the environment it starts in: the chart's value.
    saved = os.environ.get("RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS")
    os.environ["RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS"] = env["RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS"]
    try:
        with (
            prometheus_server(scrape_configs, workdir, rule_files=[rules_file]) as prometheus,
            local_serve(
                fast_embedded_args(),
                metrics_export_port=metrics_port,
                deployment_options={"max_ongoing_requests": 4, "max_queued_requests": 2},
            ) as url,
        ):
            import ray

            logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())
            started = time.time()  # Prometheus runs on this machine: one clock
            seen = send_known_traffic(url, prometheus)
            burst_ok = seen["burst"][200]
            expected_requests = 6 + 2 + 3 + 2 + 1 + 1 + burst_ok
            # Ray reports every second here; Prometheus scrapes every second.
            prometheus.wait_for(
                f'sum(ray_sdxl_requests_total{{namespace="{NAMESPACE}"}})', lambda value: value == expected_requests
            )
            prometheus.wait_for(
                f'sum(ray_serve_num_http_requests_total{{namespace="{NAMESPACE}", status_code="503"}})',
                lambda value: value == seen["burst"][503],
            )
            yield {
                "prometheus": prometheus,
                "seen": seen,
                "burst_ok": burst_ok,
                "expected_requests": expected_requests,
                "logs_dir": logs_dir,
                "started": started,
                "url": url,
            }
    finally:
        neuron.shutdown()
        if saved is None:
            os.environ.pop("RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS", None)
        else:
            os.environ["RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS"] = saved


def sel(**labels: str) -> str:
    """The release's series (as the dashboard and rules select them), with more label matchers."""
    matchers = {"namespace": NAMESPACE, "application": "sdxl", **labels}
    return ", ".join(f'{name}="{value}"' for name, value in matchers.items())


def test_prometheus_scrapes_the_port_and_path_the_chart_sets(rendered, live):
    targets = {target["labels"]["job"]: target for target in live["prometheus"].targets()}
    assert targets["ray"]["health"] == "up" and targets["ray"]["scrapeUrl"].endswith("/metrics")
    # On the cluster that endpoint is each Ray pod's metrics-export-port, the port the PodMonitor names.
    head, worker = rendered.head_group, rendered.worker_group
    assert head["rayStartParams"]["metrics-export-port"] == worker["rayStartParams"]["metrics-export-port"] == "8080"
    ports = {port["name"]: port["containerPort"] for port in rendered.worker_container["ports"]}
    assert (
        rendered.one("PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "metrics" and ports["metrics"] == 8080
    )


def test_the_images_counter_equals_the_images_answered(live):
    api, burst_ok = live["prometheus"], live["burst_ok"]
    assert api.by(f"sum by (endpoint) (ray_sdxl_images_total{{{sel()}}})", "endpoint") == {
        "/imagine": 6 + burst_ok,
        "/v1/images/generations": 4,
    }
    assert api.by(f"sum by (format) (ray_sdxl_images_total{{{sel()}}})", "format") == {"png": 9 + burst_ok, "jpeg": 1}
    assert api.by(f"sum by (size) (ray_sdxl_images_total{{{sel()}}})", "size") == {"128x96": 10, "96x128": burst_ok}


def test_requests_are_counted_by_endpoint_status_class_and_error_code(live):
    api, burst_ok = live["prometheus"], live["burst_ok"]
    by_code = api.by(f"sum by (code) (ray_sdxl_requests_total{{{sel()}}})", "code")
    assert by_code == {"ok": 8 + burst_ok, "out_of_range": 3, "unknown_parameter": 2, "invalid_json": 1, "not_found": 1}
    assert api.by(f"sum by (status_class) (ray_sdxl_requests_total{{{sel()}}})", "status_class") == {
        "2xx": 8 + burst_ok,
        "4xx": 7,
    }
    assert api.by(f"sum by (endpoint) (ray_sdxl_requests_total{{{sel(code='not_found')}}})", "endpoint") == {
        "unmatched": 1
    }
    # Probes are not metered: no series for /healthz or /info.
    assert set(api.by(f"sum by (endpoint) (ray_sdxl_requests_total{{{sel()}}})", "endpoint")) == {
        "/imagine",
        "/v1/images/generations",
        "unmatched",
    }


def test_serves_proxy_counts_the_backpressure_503s_the_replica_never_saw(live):
    api, seen = live["prometheus"], live["seen"]
    by_status = api.by(f"sum by (status_code) (ray_serve_num_http_requests_total{{{sel()}}})", "status_code")
    assert by_status["503"] == seen["burst"][503]
    assert by_status["400"] == 6 and by_status["404"] == 1
    assert api.value(f"sum(ray_sdxl_requests_total{{{sel(status_class='5xx')}}})") is None


def test_histograms_count_every_request_image_call_and_encode(live):
    api, burst_ok = live["prometheus"], live["burst_ok"]
    images = 10 + burst_ok
    assert api.value(f"sum(ray_sdxl_request_seconds_count{{{sel()}}})") == live["expected_requests"]
    assert api.value(f"sum(ray_sdxl_request_seconds_bucket{{{sel(le='+Inf')}}})") == live["expected_requests"]
    assert api.value(f"sum(ray_sdxl_queue_wait_seconds_count{{{sel()}}})") == images
    assert api.by(f"sum by (format) (ray_sdxl_encode_seconds_count{{{sel()}}})", "format") == {
        "png": images - 1,
        "jpeg": 1,
    }
    # Images per call: its _sum is exact (half-integer buckets), so it adds up to every image made.
    calls = api.value(f"sum(ray_sdxl_pipeline_call_images_count{{{sel()}}})")
    assert api.value(f"sum(ray_sdxl_pipeline_call_images_sum{{{sel()}}})") == images
    assert 1 <= calls <= images
    assert api.value(f"sum(ray_sdxl_pipeline_call_seconds_count{{{sel()}}})") == calls
    assert set(api.by(f"sum by (size) (ray_sdxl_pipeline_call_seconds_count{{{sel()}}})", "size")) == {
        "128x96",
        "96x128",
    }
    assert set(api.by(f"sum by (steps) (ray_sdxl_pipeline_call_seconds_count{{{sel()}}})", "steps")) == {"1-10"}


def test_replica_gauges_report_health_batch_size_and_load_time(live):
    api = live["prometheus"]
    assert api.value(f"sum(ray_sdxl_replica_healthy{{{sel()}}})") == 1
    assert api.value(f"max(ray_sdxl_pipeline_failures_in_a_row{{{sel()}}})") == 0
    assert api.value(f"max(ray_sdxl_batch_size{{{sel()}}})") == fast_embedded_args()["batch_size"]
    assert api.value(f"max(ray_sdxl_model_load_seconds{{{sel()}}})") > 0
    assert api.value(f"max(ray_sdxl_warmup_seconds{{{sel()}}})") > 0


def test_serves_latency_histogram_has_the_buckets_the_chart_sets(live):
    # 15 s is no bucket of Serve's default (10 s, then 60 s); it is one of the chart's.
    buckets = {
        item["metric"]["le"]
        for item in live["prometheus"].query(f"ray_serve_http_request_latency_ms_bucket{{{sel(status_code='200')}}}")
    }
    assert {"15000.0", "30000.0"} <= buckets and "600000.0" not in buckets


def test_every_dashboard_panel_returns_data_with_traffic_flowing(rendered, live):
    api = live["prometheus"]
    dashboard = dashboard_from_rendered(rendered)
    queries = panel_queries(dashboard, rate_interval="2m")
    assert len({query.panel for query in queries}) == len(dashboard["panels"]) >= 10
    empty = [f"{query.panel} [{query.ref}]: {query.expr}" for query in queries if not api.query(query.expr)]
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    by_panel = {(query.panel, query.ref): query.expr for query in queries}
    assert api.value(by_panel[("Throughput", "A")]) > 0
    assert {"out_of_range", "unknown_parameter", "invalid_json", "not_found"} <= set(
        api.by(by_panel[("Errors by code", "A")], "code")
    )
    assert api.value(by_panel[("Replicas", "A")]) == 1
    assert api.value(by_panel[("Batch fill", "A")]) >= 1
    assert api.by(by_panel[("NeuronCore utilization", "A")], "instance_id") == {"i-0123456789abcdef0": 0.5}
    # The picture a human looks at (artifacts/ is git-ignored; docs/dashboard.png comes from
    # bench/dashboard_snapshot.py).
    render_png(api, dashboard, live["started"] - 10, time.time(), REPO_ROOT / "artifacts" / "dashboard-test.png")


def test_the_rendered_alert_rules_load_and_evaluate_against_the_live_series(rendered, live):
    api = live["prometheus"]
    groups = api.rule_groups()
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {
        rule["alert"] for group in rendered.one("PrometheusRule")["spec"]["groups"] for rule in group["rules"]
    }
    assert all(rule["health"] == "ok" for rule in rules), [(rule["name"], rule.get("lastError")) for rule in rules]
    firing = {
        rule["alert"]: bool(api.query(rule["expr"]))
        for group in rendered.one("PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
    }
    # A third of the burst was refused: backpressure, and nothing else, is above its threshold.
    assert firing == {
        "SDXLNoHealthyReplica": False,
        "SDXLReplicaUnhealthy": False,
        "SDXLServerErrors": False,
        "SDXLLatencyAboveSLO": False,
        "SDXLBackpressure": True,
        "SDXLPipelineFailures": False,
    }
    api.wait_for('count(ALERTS{alertname="SDXLBackpressure", alertstate="pending"})', lambda value: value == 1, 30)


def test_the_latency_alert_follows_the_slo_value(live):
    api = live["prometheus"]
    strict = render(
        {
            **MONITORING,
            "monitoring": {**MONITORING["monitoring"], "prometheusRule": {"enabled": True, "latencySloSeconds": 0.001}},
        }
    )
    (latency,) = [
        rule
        for group in strict.one("PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
        if rule["alert"] == "SDXLLatencyAboveSLO"
    ]
    assert api.query(latency["expr"]), "p95 is above 1 ms: the alert expression must select it"


def access_log_lines(logs_dir: Path) -> list[dict]:
    lines = []
    for path in sorted((logs_dir / "serve").glob("replica_sdxl_SDXLService_*.log")):
        for line in path.read_text(errors="replace").splitlines():
            start = line.find('{"event":"sdxl_request"')
            if start >= 0:
                lines.append(json.loads(line[start:]))
    return lines


def test_one_json_access_log_line_per_generation_request_without_the_prompt(live):
    lines = access_log_lines(live["logs_dir"])
    assert len(lines) == live["expected_requests"]
    assert Counter(line["code"] for line in lines) == Counter(
        {"ok": 8 + live["burst_ok"], "out_of_range": 3, "unknown_parameter": 2, "invalid_json": 1, "not_found": 1}
    )
    good = next(line for line in lines if line["endpoint"] == "/v1/images/generations" and line["status"] == 200)
    assert good["images"] == 2 and good["size"] == "128x96" and good["steps"] == 4 and good["seed"] == 7
    assert good["format"] == "png" and good["batch_images"] >= 1 and good["pipeline_ms"] >= 0
    assert {"queue_ms", "encode_ms", "total_ms"} <= set(good)
    assert {line["request_id"] for line in lines} >= {rid for rid in live["seen"]["request_ids"] if rid}
    assert all("prompt" not in line for line in lines)
    forms = {SECRET_PROMPT, urllib.parse.quote(SECRET_PROMPT), urllib.parse.quote_plus(SECRET_PROMPT)}
    leaked = [
        path
        for path in live["logs_dir"].rglob("*")
        if path.is_file() and any(form.encode() in path.read_bytes() for form in forms)
    ]
    assert not leaked, f"the prompt reached {leaked}"
