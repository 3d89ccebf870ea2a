"""NOTES.txt, what `helm install` prints: the exact next commands for the values given."""

from __future__ import annotations

from tests.chart.chartlib import render


def test_notes_print_how_to_watch_the_pods_and_wait_for_the_ready_condition():
    notes = render().notes
    # KubeRay's RayService condition type is "Ready" (rayservice_types.go), true with >= 1 Serve endpoint.
    assert "kubectl -n sdxl wait --for=condition=Ready rayservice/sdxl --timeout=60m" in notes
    assert "kubectl -n sdxl get pods -l app.kubernetes.io/instance=sdxl -w" in notes
    assert "12 replicas of SDXLService, 2 NeuronCores each, 12 per node: 1 worker node(s)" in notes


def test_notes_give_the_ingress_address_lookup_and_first_curl_without_a_host():
    notes = render().notes
    assert "kubectl -n sdxl get ingress sdxl -o jsonpath=" in notes
    assert 'curl -o image.png "http://$INGRESS/serve/imagine?prompt=' in notes


def test_notes_use_the_ingress_host_and_https_when_tls_is_on():
    notes = render(scenario="alb").notes
    assert 'curl -o image.png "https://sdxl.example.com/serve/imagine?prompt=' in notes
    assert "https://sdxl.example.com/ui/" in notes


def test_notes_fall_back_to_port_forward_without_an_ingress():
    notes = render(scenario="cpu-local").notes
    assert "kubectl -n sdxl port-forward svc/sdxl-serve-svc 8000:8000" in notes
    assert 'curl -o image.png "http://127.0.0.1:8000/serve/imagine?prompt=' in notes
    assert "$INGRESS" not in notes


def test_notes_print_helm_test_upgrade_and_a_local_only_dashboard_command():
    notes = render().notes
    assert "helm test sdxl -n sdxl" in notes
    # --reset-then-reuse-values (Helm >= 3.14): plain --reuse-values would drop a newer chart's new defaults.
    assert "helm upgrade sdxl ./chart -n sdxl --reset-then-reuse-values --set replicas=N" in notes
    assert "--reuse-values" not in notes.replace("--reset-then-reuse-values", "")
    assert "kubectl -n sdxl port-forward svc/sdxl-head-svc 8265:8265" in notes
    pinned_and_tolerant = {
        "model": {"revision": "0123abc"},
        "rayCluster": {"faultTolerance": {"mode": "redis", "redis": {"address": "redis:6379"}}},
    }
    assert "WARNING" not in render(pinned_and_tolerant).notes


def test_notes_describe_autoscaling_bounds_when_enabled():
    notes = render(scenario="autoscaling").notes
    assert "between 12 and 48 replicas; 12 replicas (2 NeuronCores each) fit on one node, 1 to 4 nodes" in notes
    assert "--reset-then-reuse-values --set autoscaling.maxReplicas=N" in notes
    assert "N is at most 48 (12 per node x workers.maxNodes=4)" in notes


def test_notes_show_the_ui_port_forward_url_when_the_ui_is_enabled():
    notes = render(scenario="servicemonitor").notes
    assert "then open http://127.0.0.1:8000/ui/" in notes
    assert "/ui/" not in render().notes


def test_notes_show_how_to_send_the_api_key():
    notes = render({"apiKey": {"existingSecret": "sdxl-key"}}).notes
    assert (
        "Authorization: Bearer $(kubectl -n sdxl get secret sdxl-key -o jsonpath='{.data.api-key}' | base64 -d)"
        in notes
    )


def test_notes_warn_while_the_image_repository_is_the_unpushed_local_name():
    assert "Build image/Dockerfile, push it" in render().notes
    assert (
        "Build image/Dockerfile"
        not in render({"image": {"repository": "123456789012.dkr.ecr.us-west-2.amazonaws.com/sdxl-inf2"}}).notes
    )


def test_notes_warn_that_a_public_ui_spends_a_shared_api_key():
    notes = render({"ui": {"enabled": True, "shareApiKey": True}, "apiKey": {"existingSecret": "sdxl-key"}}).notes
    assert "the UI calls the API with the API key for whoever opens /ui/" in notes
    keyed = render({"ui": {"enabled": True}, "apiKey": {"existingSecret": "sdxl-key"}}).notes
    assert "for whoever opens /ui/" not in keyed and "The page asks for the API key" in keyed
    assert "for whoever opens /ui/" not in render({"ui": {"enabled": True}}).notes


PATCH = (
    "kubectl -n sdxl patch raycluster "
    "$(kubectl -n sdxl get rayservice sdxl -o jsonpath='{.status.activeServiceStatus.rayClusterName}') "
    '--type json -p \'[{"op":"replace","path":"/spec/workerGroupSpecs/0/maxReplicas","value":M}]\''
)


def test_notes_give_the_replica_ceiling_of_the_installed_cluster_and_the_patch_that_raises_it():
    # KubeRay never applies a changed workers.maxNodes to a running RayCluster: the patch is the only way up.
    notes = render({"replicas": 24, "workers": {"maxNodes": 3}}).notes
    assert "N is at most 36 (12 per node x workers.maxNodes=3)" in notes
    assert PATCH in notes
    assert "then upgrade with --set workers.maxNodes=M,replicas=N (N up to 12 x M)" in notes


def test_notes_patch_also_sets_the_worker_count_when_no_ray_autoscaler_adds_nodes():
    notes = render({"rayCluster": {"enableInTreeAutoscaling": False}}).notes
    assert '"value":M},{"op":"replace","path":"/spec/workerGroupSpecs/0/replicas","value":M}]' in notes
    assert "/spec/workerGroupSpecs/0/replicas" not in render().notes


def test_notes_run_helm_in_the_release_namespace_and_kubectl_in_the_created_one():
    notes = render({"namespace": {"create": True, "name": "sdxl-serving"}}, namespace="default").notes
    assert "helm test sdxl -n default" in notes
    assert "helm upgrade sdxl ./chart -n default --reset-then-reuse-values" in notes
    assert "kubectl -n sdxl-serving wait --for=condition=Ready rayservice/sdxl" in notes
    assert "kubectl -n sdxl-serving patch raycluster $(kubectl -n sdxl-serving get rayservice sdxl" in notes


def test_notes_give_the_exact_command_that_prints_the_ray_token():
    # KubeRay names the token Secret after the RayCluster (raycluster_controller.go) with key auth_token.
    notes = render().notes
    assert (
        "kubectl -n sdxl get secret "
        "$(kubectl -n sdxl get rayservice sdxl -o jsonpath='{.status.activeServiceStatus.rayClusterName}')"
        " -o jsonpath='{.data.auth_token}' | base64 -d"
    ) in notes
    assert "auth_token" not in render({"rayCluster": {"authMode": "disabled"}}).notes


def test_notes_warn_about_an_unpinned_hub_model_on_neuron_only():
    warning = "WARNING: model.revision is empty"
    assert warning in render().notes
    assert "--set model.revision=<commit>" in render().notes
    assert warning not in render({"model": {"revision": "v2"}}).notes
    assert warning not in render(scenario="cpu-local").notes  # the embedded model
    assert warning not in render({"model": {"id": "/models/sdxl", "download": False}}).notes


def test_notes_say_that_tolerations_and_node_counts_alone_do_not_reach_a_running_cluster():
    assert "(and, since 1.6, head/worker tolerations) out of its cluster hash" in render().notes


def test_notes_warn_loudly_when_expiry_would_take_the_only_inf2_node_down():
    karpenter = {"create": True, "clusterName": "c", "nodeRole": "r"}
    expiring = render({"karpenter": {**karpenter, "expireAfter": "720h"}}).notes
    assert "WARNING: karpenter.expireAfter=720h" in expiring
    assert "a full outage every 720h" in expiring
    spread = render(
        {"karpenter": {**karpenter, "expireAfter": "720h", "surgeNodes": 2}, "workers": {"maxNodes": 2}, "replicas": 24}
    ).notes
    assert "WARNING: karpenter.expireAfter=720h" in spread and "full outage" not in spread
    assert "karpenter.expireAfter" not in render({"karpenter": karpenter}).notes


def test_notes_tell_how_to_let_karpenter_replace_drifted_nodes():
    notes = render({"karpenter": {"create": True, "clusterName": "c", "nodeRole": "r"}}).notes
    assert "Drifted nodes (e.g. a new AMI behind al2023@latest) are not replaced until you allow it" in notes
    assert """--set-json 'karpenter.disruptionBudgets=[{"nodes":"1","reasons":["Drifted"]}]'""" in notes


def test_notes_name_the_dashboard_configmap_and_the_alert_rules_when_enabled():
    notes = render(scenario="karpenter").notes
    assert 'Grafana dashboard "SDXL on Inferentia2 (sdxl-serving/sdxl)": ConfigMap monitoring/sdxl-dashboard' in notes
    assert "kubectl -n sdxl-serving get prometheusrule sdxl -o yaml" in notes
    assert "through the PodMonitor sdxl-serving/sdxl" in notes
    assert "Monitoring" not in render().notes


def test_notes_warn_that_alert_rules_without_a_monitor_see_no_metrics():
    notes = render({"monitoring": {"prometheusRule": {"enabled": True}}}).notes
    assert "no monitor is enabled" in notes and "SDXLNoHealthyReplica fires" in notes
    assert "no monitor is enabled" not in render(scenario="karpenter").notes
