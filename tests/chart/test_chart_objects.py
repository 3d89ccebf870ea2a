"""Traffic, security and the optional objects: the Ingress reaches only Serve's HTTP port through
KubeRay's stable serve Service, every container is locked down and has requests, and the opt-in
Karpenter/monitoring/NetworkPolicy objects select what the RayService actually creates."""

from __future__ import annotations

import pytest

from tests.chart.chartlib import SCENARIOS, render, render_error

RAY_INTERNAL_PORTS = {6379, 8265, 10001}


def ingress_backends(rendered) -> list[tuple[str | None, str, str, int]]:
    routes = []
    for ingress in rendered.all("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                service = path["backend"]["service"]
                routes.append((rule.get("host"), path["path"], service["name"], service["port"]["number"]))
    return routes


def test_ingress_sends_serve_paths_unchanged_to_the_stable_serve_service():
    ingress = render().one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert "annotations" not in ingress["metadata"]  # no rewrite: the app's route_prefix is /serve
    assert ingress_backends(render()) == [(None, "/serve", "sdxl-serve-svc", 8000)]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["pathType"] == "Prefix"


def test_serve_service_name_follows_the_release_not_a_per_cluster_name():
    rendered = render(name="imagegen")
    assert ingress_backends(rendered) == [(None, "/serve", "imagegen-sdxl-serve-svc", 8000)]
    assert rendered.rayservice["metadata"]["name"] == "imagegen-sdxl"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_scenario_routes_the_dashboard_gcs_or_client_ports(scenario):
    rendered = render(scenario=scenario)
    assert all(port == 8000 for *_, port in ingress_backends(rendered))
    assert "DASHBOARD IS EXPOSED" not in rendered.notes


def test_alb_scenario_uses_the_alb_class_with_ip_targets_host_and_acm_tls():
    rendered = render(scenario="alb")
    ingress = rendered.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-type"] == "ip"
    # The AWS Load Balancer Controller finds the ACM certificate by host: no Secret is named.
    assert ingress["spec"]["tls"] == [{"hosts": ["sdxl.example.com"]}]
    with_secret = render({"ingress": {"tls": {"secretName": "ignored"}}}, scenario="alb").one("Ingress")
    assert with_secret["spec"]["tls"] == [{"hosts": ["sdxl.example.com"]}]
    assert ingress_backends(rendered) == [
        ("sdxl.example.com", "/serve", "sdxl-serve-svc", 8000),
        ("sdxl.example.com", "/ui", "sdxl-serve-svc", 8000),
    ]


def test_nginx_tls_names_the_certificate_secret():
    ingress = render({"ingress": {"host": "sdxl.example.com", "tls": {"enabled": True, "secretName": "sdxl-tls"}}}).one(
        "Ingress"
    )
    assert ingress["spec"]["tls"] == [{"hosts": ["sdxl.example.com"], "secretName": "sdxl-tls"}]


def test_no_ingress_is_rendered_when_disabled():
    assert "Ingress" not in render(scenario="cpu-local").kinds()


def test_dashboard_ingress_is_opt_in_on_its_own_host_with_a_loud_warning():
    rendered = render({"dashboard": {"ingress": {"enabled": True, "host": "ray.example.com"}}})
    assert ("ray.example.com", "/", "sdxl-head-svc", 8265) in ingress_backends(rendered)
    assert (None, "/serve", "sdxl-serve-svc", 8000) in ingress_backends(rendered)
    assert "WARNING: THE RAY DASHBOARD IS EXPOSED at http://ray.example.com/" in rendered.notes
    assert "arbitrary code" in rendered.notes and "plain HTTP" in rendered.notes
    dashboard = rendered.one("Ingress", "sdxl-dashboard")
    assert "tls" not in dashboard["spec"]


def test_dashboard_ingress_terminates_tls_when_given_a_certificate():
    rendered = render(
        {"dashboard": {"ingress": {"enabled": True, "host": "ray.example.com", "tlsSecretName": "ray-tls"}}}
    )
    assert rendered.one("Ingress", "sdxl-dashboard")["spec"]["tls"] == [
        {"hosts": ["ray.example.com"], "secretName": "ray-tls"}
    ]
    assert "EXPOSED at https://ray.example.com/" in rendered.notes and "plain HTTP" not in rendered.notes


def all_containers(rendered) -> dict[str, dict]:
    containers = {}
    for pod, spec in rendered.pod_specs().items():
        for container in spec["containers"]:
            containers[f"{pod}/{container['name']}"] = container
    return containers


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_container_is_non_root_unprivileged_read_only_and_has_requests(scenario):
    rendered = render(scenario=scenario)
    containers = all_containers(rendered)
    assert {"ray-head/ray-head", "ray-worker/ray-worker", "sdxl-test-generate/test"} <= containers.keys()
    for name, container in containers.items():
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"] == {"drop": ["ALL"]}, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["runAsNonRoot"] is True, name
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
    for pod, spec in rendered.pod_specs().items():
        assert spec["securityContext"]["runAsNonRoot"] is True, pod
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, pod
        # Only the head's autoscaler sidecar talks to the Kubernetes API.
        assert spec["automountServiceAccountToken"] is (pod == "ray-head"), pod


def test_no_pod_mounts_a_service_account_token_without_the_ray_autoscaler():
    rendered = render({"rayCluster": {"enableInTreeAutoscaling": False}})
    assert all(spec["automountServiceAccountToken"] is False for spec in rendered.pod_specs().values())
    assert "autoscalerOptions" not in rendered.rayservice["spec"]["rayClusterConfig"]


def test_serve_traffic_skips_the_cpu_head():
    assert render().rayservice["spec"]["excludeHeadPodFromServeSvc"] is True


def test_autoscaler_sidecar_is_locked_down_and_has_requests():
    options = render().rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]
    head_volumes = {v["name"] for v in render().head_group["template"]["spec"]["volumes"]}
    assert {m["mountPath"]: m["name"] for m in options["volumeMounts"]} == {"/tmp": "tmp", "/tmp/ray": "tmp"}
    assert "tmp" in head_volumes
    assert options["securityContext"]["allowPrivilegeEscalation"] is False
    assert options["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert options["resources"]["requests"] == {"cpu": "200m", "memory": "512Mi"}


def test_ray_writes_go_to_emptydir_volumes_under_a_read_only_root():
    rendered = render()
    for group in (rendered.head_group, rendered.worker_group):
        spec = group["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"] == "20Gi"  # Ray's /tmp/ray
        assert "emptyDir" in volumes[mounts["/cache"]]
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["HF_HOME"].startswith("/cache/")
        assert env["SDXL_EMBEDDED_MODEL_DIR"].startswith("/cache/")
        assert env["XDG_CACHE_HOME"] == "/cache"


def test_kuberay_finds_tmp_ray_already_mounted_on_the_head_so_adds_no_unbounded_volume_there():
    # KubeRay v1.7.0 (common/pod.go, BuildPod with the autoscaler on) adds an emptyDir "ray-logs" without
    # a sizeLimit at /tmp/ray to the head's Ray container and to the autoscaler sidecar, unless that
    # container already mounts /tmp/ray (addEmptyDir -> checkIfVolumeMounted).
    for scenario in SCENARIOS:
        rendered = render(scenario=scenario)
        spec = rendered.head_group["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        containers = [rendered.head_container]
        if rendered.rayservice["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"]:
            containers.append(rendered.rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"])
        for container in containers:
            mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp/ray")
            assert volumes[mount["name"]]["emptyDir"]["sizeLimit"] == "20Gi", scenario
            assert mount["subPath"] == "ray"


def test_replicas_download_the_model_into_the_shared_cache_unless_told_to_use_the_image_only():
    env = {e["name"]: e.get("value") for e in render().worker_container["env"]}
    assert (env["HF_HUB_OFFLINE"], env["HF_HOME"]) == ("0", "/cache/huggingface")
    baked = render({"model": {"download": False, "id": "/models/sdxl"}})
    env = {e["name"]: e.get("value") for e in baked.worker_container["env"]}
    # The image's own HF_HUB_OFFLINE=1 and HF_HOME apply.
    assert "HF_HUB_OFFLINE" not in env and "HF_HOME" not in env
    assert baked.application()["args"]["model_id"] == "/models/sdxl"


def test_read_only_root_can_be_turned_off_for_runtime_env_or_on_node_compilation():
    rendered = render({"securityContext": {"readOnlyRootFilesystem": False}})
    assert rendered.worker_container["securityContext"]["readOnlyRootFilesystem"] is False


def test_helm_test_pod_checks_health_and_one_png_through_the_serve_service():
    pod = render().one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BASE_URL"] == "http://sdxl-serve-svc.sdxl.svc:8000/serve"
    script = container["args"][0]
    assert "/healthz" in script and "/imagine?" in script and "PNG" in script
    compile(script, "helm-test", "exec")  # the probe script at least parses as Python
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}


def test_helm_test_pod_sends_the_api_key_when_one_is_configured():
    pod = render({"apiKey": {"existingSecret": "sdxl-key"}}).one("Pod")
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "sdxl-key", "key": "api-key"}


def test_helm_test_image_can_be_pinned_by_digest():
    digest = "sha256:" + "a" * 64
    pod = render({"helmTest": {"image": {"digest": digest}}}).one("Pod")
    assert pod["spec"]["containers"][0]["image"] == f"python@{digest}"


def test_karpenter_limits_follow_surge_nodes_and_expiry_can_be_turned_off():
    karpenter = {"create": True, "clusterName": "c", "nodeRole": "r", "surgeNodes": 2, "expireAfter": "Never"}
    pool = render(
        {"karpenter": karpenter, "workers": {"instanceType": "inf2.24xlarge", "maxNodes": 3}, "replicas": 6}
    ).one("NodePool")
    assert pool["spec"]["limits"] == {"cpu": str(96 * 5), "memory": f"{384 * 5}Gi"}
    assert pool["spec"]["template"]["spec"]["expireAfter"] == "Never"


def test_ray_containers_run_the_pinned_digest_when_one_is_given():
    digest = "sha256:" + "b" * 64
    rendered = render(
        {
            "image": {
                "repository": "123456789012.dkr.ecr.us-west-2.amazonaws.com/sdxl-inf2",
                "tag": "0.2.0",
                "digest": digest,
            }
        }
    )
    expected = f"123456789012.dkr.ecr.us-west-2.amazonaws.com/sdxl-inf2@{digest}"
    assert rendered.head_container["image"] == rendered.worker_container["image"] == expected
    assert render().worker_container["image"] == "sdxl-inf2:0.1.0"


def test_optional_objects_are_off_by_default():
    assert render().kinds() == {"RayService", "Ingress", "Pod"}


def test_karpenter_nodepool_provides_the_nodes_the_workers_select():
    rendered = render(scenario="karpenter")
    pool = rendered.one("NodePool")
    node_class = rendered.one("EC2NodeClass")
    selector = rendered.worker_group["template"]["spec"]["nodeSelector"]
    assert pool["metadata"]["name"] == selector["karpenter.sh/nodepool"]
    requirements = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == [selector["node.kubernetes.io/instance-type"]]
    assert pool["spec"]["template"]["spec"]["taints"] == [{"key": "aws.amazon.com/neuron", "effect": "NoSchedule"}]
    assert pool["spec"]["template"]["spec"]["nodeClassRef"]["name"] == node_class["metadata"]["name"]
    # maxNodes=2 inf2.48xlarge plus karpenter.surgeNodes=1 for an upgrade's second cluster or a replacement node.
    assert pool["spec"]["limits"] == {"cpu": str(192 * 3), "memory": f"{768 * 3}Gi"}
    # Expiry is forceful (no replacement first, no budget): never by default.
    assert pool["spec"]["template"]["spec"]["expireAfter"] == "Never"
    # A new AMI drifts every node; the default budget holds drift replacement back.
    assert pool["spec"]["disruption"]["budgets"] == [{"nodes": "0", "reasons": ["Drifted"]}]
    assert pool["metadata"]["name"] == "sdxl-inf2"  # scoped to the release
    assert node_class["spec"]["metadataOptions"]["httpTokens"] == "required"
    assert node_class["spec"]["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "my-eks-cluster"}}]


def test_two_releases_render_different_karpenter_nodepools():
    karpenter = {"karpenter": {"create": True, "clusterName": "c", "nodeRole": "r"}}
    first = render(karpenter, name="sdxl").one("NodePool")["metadata"]["name"]
    second = render(karpenter, name="sdxl-canary").one("NodePool")["metadata"]["name"]
    assert first != second
    assert (
        render({"workers": {"nodePool": "shared-inf2"}}).worker_group["template"]["spec"]["nodeSelector"][
            "karpenter.sh/nodepool"
        ]
        == "shared-inf2"
    )  # without karpenter.create the NodePool is the user's, used by name


def test_disruption_budgets_are_passed_to_the_nodepool_or_left_to_karpenter_when_empty():
    window = [{"nodes": "1", "reasons": ["Drifted"], "schedule": "0 3 * * sun", "duration": "2h"}]
    karpenter = {"create": True, "clusterName": "c", "nodeRole": "r"}
    pool = render({"karpenter": {**karpenter, "disruptionBudgets": window}}).one("NodePool")
    assert pool["spec"]["disruption"]["budgets"] == window
    assert (
        "budgets"
        not in render({"karpenter": {**karpenter, "disruptionBudgets": []}}).one("NodePool")["spec"]["disruption"]
    )
    assert "duration" in render_error(
        {"karpenter": {**karpenter, "disruptionBudgets": [{"nodes": "1", "schedule": "@daily"}]}}
    )


def matches(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        if expression["operator"] == "In" and labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def ray_pod_labels(rendered) -> list[dict]:
    return [
        rendered.head_group["template"]["metadata"]["labels"],
        rendered.worker_group["template"]["metadata"]["labels"],
    ]


def test_pod_monitor_selects_the_ray_pods_metrics_port():
    rendered = render(scenario="karpenter")
    monitor = rendered.one("PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert all(matches(monitor["spec"]["selector"], labels) for labels in ray_pod_labels(rendered))
    assert not matches(monitor["spec"]["selector"], rendered.one("Pod")["metadata"]["labels"])
    ports = {p["name"] for c in (rendered.head_container, rendered.worker_container) for p in c["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_service_monitor_scrapes_a_headless_service_over_the_ray_pods():
    rendered = render(scenario="servicemonitor")
    service = rendered.one("Service")
    monitor = rendered.one("ServiceMonitor")
    assert service["spec"]["clusterIP"] == "None"
    assert matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert all(matches({"matchLabels": service["spec"]["selector"]}, labels) for labels in ray_pod_labels(rendered))
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"


def test_network_policy_keeps_ray_internal_ports_to_the_clusters_own_pods():
    rendered = render(scenario="karpenter")
    policy = rendered.one("NetworkPolicy")
    assert all(matches(policy["spec"]["podSelector"], labels) for labels in ray_pod_labels(rendered))
    rules = policy["spec"]["ingress"]
    # Rules without a port list admit every port: only this release's Ray pods may have one.
    unrestricted = [rule for rule in rules if "ports" not in rule]
    assert len(unrestricted) == 1
    assert all(
        "podSelector" in peer
        and "namespaceSelector" not in peer
        and matches(peer["podSelector"], ray_pod_labels(rendered)[1])
        for peer in unrestricted[0]["from"]
    )
    assert not matches(unrestricted[0]["from"][0]["podSelector"], rendered.one("Pod")["metadata"]["labels"])
    for rule in rules:
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports & RAY_INTERNAL_PORTS:
            # Only the KubeRay operator, and only the dashboard (it deploys serveConfigV2 through it).
            assert ports & RAY_INTERNAL_PORTS == {8265}
            assert rule["from"] == [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-operator"}}}
            ]
    serve_rule = next(rule for rule in rules if [p["port"] for p in rule.get("ports", [])] == [8000])
    assert serve_rule["from"][0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }
    # helm test still reaches Serve when the sources are restricted.
    assert any(
        matches(peer["podSelector"], rendered.one("Pod")["metadata"]["labels"]) for peer in serve_rule["from"][1:]
    )


def test_network_policy_leaves_serve_open_to_any_source_when_no_peers_are_given():
    policy = render({"networkPolicy": {"enabled": True}}).one("NetworkPolicy")
    serve_rule = next(
        rule for rule in policy["spec"]["ingress"] if [p["port"] for p in rule.get("ports", [])] == [8000]
    )
    assert "from" not in serve_rule
