"""What monitoring.* renders: nothing by default; a Grafana dashboard ConfigMap the sidecar picks up, whose
panels read only metrics that exist; a PrometheusRule; Serve's latency buckets. The dashboard's and the
rules' queries are evaluated against a real Prometheus in test_chart_monitoring_live.py, the rules' logic
by promtool in test_chart_alert_rules.py."""

from __future__ import annotations

import json
import re

from app.metrics import METRICS, REQUEST_SECONDS
from tests.chart.chartlib import CHART_DIR, render
from tests.support.dashboard import dashboard_from_rendered, panel_queries

DASHBOARD_ON = {"monitoring": {"grafanaDashboard": {"enabled": True}}}
#: Metrics of Ray and Serve 2.60 the dashboard and alerts read (each seen on a live /metrics by the live test).
RAY_METRICS = {
    "ray_serve_num_http_requests_total",
    "ray_serve_http_request_latency_ms_bucket",
    "ray_serve_deployment_queued_queries",
    "ray_serve_replica_processing_queries",
    "ray_serve_deployment_replica_healthy",
    "ray_node_cpu_count",
}
#: neuron-monitor's Prometheus exporter (neuron-monitor-prometheus.py), when it runs on the nodes.
NEURON_METRICS = {"neuroncore_utilization_ratio"}
_METRIC_NAME = re.compile(r"\b((?:ray|neuroncore)_[a-z_]+)\b")


def exported_names() -> set[str]:
    """Every series name our app exports (Ray prefixes ray_; counters get _total, histograms three series)."""
    names = set()
    for name, (kind, _, _) in METRICS.items():
        if kind == "counter":
            names.add(f"ray_{name}_total")
        elif kind == "histogram":
            names |= {f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"}
        else:
            names.add(f"ray_{name}")
    return names


def test_renders_no_dashboard_and_no_rules_by_default():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in render().docs}
    assert not [item for item in kinds if item[0] in ("ConfigMap", "PrometheusRule")]


def test_the_dashboard_configmap_carries_the_sidecars_label_and_one_json_file():
    config_map = render(DASHBOARD_ON).one("ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "sdxl"
    (key,) = config_map["data"]
    assert key == "sdxl-sdxl-sdxl.json"
    json.loads(config_map["data"][key])


def test_the_sidecar_label_annotations_and_namespace_are_configurable():
    # Helm merges maps with the default: null removes the default label.
    values = {
        "monitoring": {
            "grafanaDashboard": {
                "enabled": True,
                "labels": {"grafana_dashboard": None, "dashboards": "sdxl"},
                "annotations": {"grafana_folder": "Inference"},
                "namespace": "monitoring",
            }
        }
    }
    metadata = render(values).one("ConfigMap")["metadata"]
    assert metadata["labels"]["dashboards"] == "sdxl" and "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "Inference"}
    assert metadata["namespace"] == "monitoring"


def test_the_chart_fills_in_the_release_namespace_instance_type_and_a_unique_uid():
    one = dashboard_from_rendered(render({**DASHBOARD_ON, "workers": {"instanceType": "inf2.24xlarge"}, "replicas": 6}))
    other = dashboard_from_rendered(render({**DASHBOARD_ON, "namespace": {"name": "images"}}))
    constants = {
        variable["name"]: variable["query"] for variable in one["templating"]["list"] if variable["type"] == "constant"
    }
    assert constants == {"namespace": "sdxl", "instance_type": "inf2.24xlarge"}
    assert one["uid"] != other["uid"] and len(one["uid"]) <= 40
    assert 'namespace="images"' in panel_queries(other, "5m")[0].expr


def test_the_packaged_dashboard_is_importable_as_it_is():
    dashboard = json.loads((CHART_DIR / "dashboards" / "sdxl-inf2.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_the_dashboard_covers_what_an_operator_asks():
    titles = {panel["title"] for panel in dashboard_from_rendered(render(DASHBOARD_ON))["panels"]}
    assert {
        "Throughput",
        "Latency percentiles",
        "Queue wait in the replica",
        "Batch fill",
        "Errors by code",
        "Replicas",
        "Ray nodes",
        "NeuronCore utilization",
        "Pipeline call seconds",
    } <= titles


def test_dashboard_and_rules_read_only_metrics_that_exist():
    rendered = render({"monitoring": {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}})
    expressions = [query.expr for query in panel_queries(dashboard_from_rendered(rendered), "5m")]
    expressions += [
        rule["expr"] for group in rendered.one("PrometheusRule")["spec"]["groups"] for rule in group["rules"]
    ]
    used = {name for expr in expressions for name in _METRIC_NAME.findall(expr)}
    unknown = used - exported_names() - RAY_METRICS - NEURON_METRICS
    assert not unknown, unknown
    assert used & exported_names() and used & RAY_METRICS


def test_serves_latency_buckets_are_the_apps_request_buckets():
    for container in (render().worker_container, render().head_container):
        env = {item["name"]: item.get("value") for item in container["env"]}
        buckets = [float(value) for value in env["RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS"].split(",")]
        assert buckets == [seconds * 1000 for seconds in REQUEST_SECONDS]


def test_log_prompts_is_off_unless_asked():
    assert render().application()["args"]["log_prompts"] is False
    assert render({"monitoring": {"logPrompts": True}}).application()["args"]["log_prompts"] is True


def test_the_local_run_exports_metrics_on_the_port_the_chart_sets():
    from app.local_run import METRICS_PORT

    rendered = render()
    for group in (rendered.head_group, rendered.worker_group):
        assert group["rayStartParams"]["metrics-export-port"] == str(METRICS_PORT)
