"""The RayService the chart renders: Serve config that the app accepts, a CPU head that takes no
replica, an inf2 worker group sized from the instance table, and the Ray autoscaler able to see
the node's NeuronCores."""

from __future__ import annotations

import re

import pytest
from ray.autoscaler._private.kuberay.autoscaling_config import _get_ray_resources_from_group_spec
from ray.serve.schema import ServeDeploySchema

from app.config import AppArgs, parse_app_args
from tests.chart.chartlib import REPO_ROOT, SCENARIOS, render

# EC2 facts, written here independently of the chart's table so that a typo there fails a test.
INF2_48XLARGE = {"cores": 24, "devices": 12, "vcpu": 192, "memory_gib": 768}


@pytest.fixture(scope="module")
def default():
    return render()


def test_default_values_use_every_neuroncore_of_an_inf2_48xlarge(default):
    deployment = default.sdxl_deployment
    cores_per_replica = deployment["ray_actor_options"]["resources"]["neuron_cores"]
    assert deployment["num_replicas"] == 12
    assert cores_per_replica == 2
    assert deployment["num_replicas"] * cores_per_replica == INF2_48XLARGE["cores"]
    assert default.advertised_resources() == {"neuron_cores": INF2_48XLARGE["cores"]}
    assert default.application()["args"]["neuron_cores_per_replica"] == cores_per_replica


def test_ray_autoscaler_sees_the_worker_nodes_neuron_cores_and_no_cpus_on_the_head(default):
    # Ray's own parser of KubeRay group specs: what the autoscaler believes one new node provides.
    worker = _get_ray_resources_from_group_spec(default.worker_group, is_head=False)
    head = _get_ray_resources_from_group_spec(default.head_group, is_head=True)
    assert worker["neuron_cores"] == INF2_48XLARGE["cores"]
    assert worker["CPU"] == INF2_48XLARGE["vcpu"] - 2
    assert head["CPU"] == 0
    assert "neuron_cores" not in head


def test_worker_requests_the_whole_node_minus_daemonset_headroom(default):
    resources = default.worker_container["resources"]
    expected_memory_mib = INF2_48XLARGE["memory_gib"] * 1024 * 90 // 100 - 4 * 1024
    for side in ("requests", "limits"):
        assert resources[side]["cpu"] == str(INF2_48XLARGE["vcpu"] - 2)
        assert resources[side]["memory"] == f"{expected_memory_mib}Mi"
        assert resources[side]["aws.amazon.com/neuroncore"] == str(INF2_48XLARGE["cores"])


def test_requesting_neuron_devices_asks_for_every_device_of_the_node():
    rendered = render({"workers": {"neuronResource": "aws.amazon.com/neuron"}})
    limits = rendered.worker_container["resources"]["limits"]
    assert limits["aws.amazon.com/neuron"] == str(INF2_48XLARGE["devices"])
    assert "aws.amazon.com/neuroncore" not in limits
    # Ray still schedules by cores.
    assert rendered.advertised_resources() == {"neuron_cores": INF2_48XLARGE["cores"]}


@pytest.mark.parametrize(
    ("instance_type", "cores_per_replica", "node_cores", "replicas_per_node"),
    [
        ("inf2.xlarge", 2, 2, 1),
        ("inf2.8xlarge", 1, 2, 2),
        ("inf2.24xlarge", 2, 12, 6),
        ("inf2.48xlarge", 4, 24, 6),
        ("trn1.32xlarge", 2, 32, 16),
    ],
)
def test_replicas_per_node_is_node_cores_divided_by_cores_per_replica(
    instance_type, cores_per_replica, node_cores, replicas_per_node
):
    values = {
        "workers": {"instanceType": instance_type},
        "neuronCoresPerReplica": cores_per_replica,
        "serve": {"replicaCpus": 1, "replicaMemoryMiB": 1024},
    }
    full_node = render({**values, "replicas": replicas_per_node})
    assert full_node.advertised_resources() == {"neuron_cores": node_cores}
    assert (
        full_node.worker_group["template"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"] == instance_type
    )
    assert f"{replicas_per_node} per node" in full_node.notes
    # One replica more than a node holds needs a second node, which maxNodes=1 forbids.
    from tests.chart.chartlib import render_error

    message = render_error({**values, "replicas": replicas_per_node + 1})
    assert f"{replicas_per_node} replica{'' if replicas_per_node == 1 else 's'} each" in message


# KubeRay v1.7.0, ray-operator/controllers/ray/utils/validation.go (ValidateRayClusterSpec): a group with
# the top-level `resources` field must not also set any of these in rayStartParams.
RAY_START_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")


def kuberay_ray_start_resources(group_resources: dict) -> str:
    """What KubeRay v1.7.0 writes into rayStartParams["resources"] for a group's `resources`
    (common/pod.go updateRayStartParamsResources: quantities as floats, json.Marshal, wrapped in '...')."""
    import json

    custom = {
        name: float(quantity)
        for name, quantity in group_resources.items()
        if name.lower() not in ("cpu", "memory") and not name.lower().endswith("gpu")
    }
    # Go's json.Marshal writes a whole float64 without a fraction (24, not 24.0).
    custom = {name: int(value) if value.is_integer() else value for name, value in custom.items()}
    return "'" + json.dumps(custom, separators=(",", ":"), sort_keys=True) + "'"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_parser_on_the_way_to_ray_start_reads_the_same_neuron_cores(scenario):
    import json
    import shlex
    from types import SimpleNamespace

    from ray._private.utils import parse_resources_json

    rendered = render(scenario=scenario)
    group = rendered.worker_group
    node_cores = int(group["resources"]["neuron_cores"])
    # KubeRay refuses a group that declares resources both ways, so none may be in rayStartParams.
    assert not set(RAY_START_RESOURCE_PARAMS) & group["rayStartParams"].keys()
    # KubeRay's getResourcesMap (pod.go) trims quotes and parses JSON; it must succeed, or KubeRay logs
    # "failed to add accelerator resources" for every worker pod and skips its accelerator detection.
    written = kuberay_ray_start_resources(group["resources"])
    assert json.loads(written.strip("'\"` ")) == {"neuron_cores": node_cores}
    # convertParamMap emits --resources=<value>; bash removes the quotes; `ray start` parses JSON.
    (argument,) = shlex.split(f"--resources={written}")
    quiet = SimpleNamespace(
        error=lambda *a, **k: None, abort=lambda *a, **k: pytest.fail(f"ray start rejects {argument}")
    )
    assert parse_resources_json(argument.removeprefix("--resources="), quiet, SimpleNamespace(bold=str)) == {
        "neuron_cores": node_cores
    }
    # And the Ray autoscaler, which sizes new nodes from the group spec, sees the same number.
    assert rendered.advertised_resources() == {"neuron_cores": node_cores}


def test_head_group_runs_no_replica_and_sits_on_the_cpu_nodepool(default):
    head = default.head_group
    assert head["rayStartParams"]["num-cpus"] == "0"
    spec = head["template"]["spec"]
    # amd64: the serving image (AWS's Neuron DLC) exists for x86-64 only.
    assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "default", "kubernetes.io/arch": "amd64"}
    assert not any(key.startswith("aws.amazon.com/") for key in default.head_container["resources"].get("limits", {}))
    assert "tolerations" not in spec


def test_head_service_name_is_never_set_because_kuberay_rejects_it_on_a_rayservice():
    for scenario in SCENARIOS:
        head = render(scenario=scenario).head_group
        assert "name" not in head.get("headService", {}).get("metadata", {}), scenario


def test_workers_select_the_instance_type_and_karpenter_nodepool_and_tolerate_neuron(default):
    spec = default.worker_group["template"]["spec"]
    assert spec["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "inf2.48xlarge",
        "karpenter.sh/nodepool": "inf2",
    }
    assert {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_nodepool_labels_are_configurable_and_can_be_dropped():
    rendered = render({"workers": {"nodePool": "neuron-pool"}, "head": {"nodePool": ""}})
    assert rendered.worker_group["template"]["spec"]["nodeSelector"]["karpenter.sh/nodepool"] == "neuron-pool"
    assert rendered.head_group["template"]["spec"]["nodeSelector"] == {"kubernetes.io/arch": "amd64"}


def test_worker_node_counts_come_from_values(default):
    assert (default.worker_group["minReplicas"], default.worker_group["maxReplicas"]) == (1, 1)
    scaled = render(scenario="autoscaling")
    assert (scaled.worker_group["minReplicas"], scaled.worker_group["maxReplicas"]) == (1, 4)
    assert render({"replicas": 30, "workers": {"maxNodes": 3}}).worker_group["replicas"] == 3


def test_ray_version_equals_the_pyproject_ray_pin(default):
    import tomllib

    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [re.fullmatch(r"ray\[[a-z,]+\]==([0-9.]+)", dependency) for dependency in dependencies]
    (pin,) = [match.group(1) for match in pins if match]
    assert default.rayservice["spec"]["rayClusterConfig"]["rayVersion"] == pin


def test_image_tag_defaults_to_the_chart_app_version(default):
    import yaml

    app_version = yaml.safe_load((REPO_ROOT / "chart" / "Chart.yaml").read_text())["appVersion"]
    assert default.worker_container["image"] == f"sdxl-inf2:{app_version}"
    assert render({"image": {"tag": "1.2.3"}}).head_container["image"] == "sdxl-inf2:1.2.3"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_serve_config_is_accepted_by_serve_and_its_args_by_the_app(scenario):
    rendered = render(scenario=scenario)
    ServeDeploySchema.model_validate(rendered.serve_config)
    api = rendered.application("sdxl")
    assert api["import_path"] == "app.main:build_app"
    assert api["route_prefix"] == "/serve"
    assert isinstance(parse_app_args(api["args"]), AppArgs)


def test_the_cpu_local_scenario_serves_the_embedded_model_as_the_local_run_does():
    from app.embedded_model import EMBEDDED_LOCAL_ARGS

    args = render(scenario="cpu-local").application()["args"]
    assert args["model_id"] == "embedded" and args["backend"] == "cpu"
    assert {key: args[key] for key in EMBEDDED_LOCAL_ARGS} == EMBEDDED_LOCAL_ARGS


def test_app_args_carry_model_limits_and_defaults_from_values():
    rendered = render(
        {
            "model": {"id": "my-org/sdxl", "revision": "abc123", "batchSize": 2, "imageSizes": ["768x768"]},
            "generation": {"maxSteps": 40, "defaultSteps": 20, "maxPromptChars": 500, "defaultOutputFormat": "webp"},
            "serve": {"maxOngoingRequests": 4},
        }
    )
    args = parse_app_args(rendered.application()["args"])
    assert (args.model_id, args.model_revision, args.batch_size) == ("my-org/sdxl", "abc123", 2)
    assert args.image_sizes == ("768x768",)
    assert (args.max_steps, args.default_steps, args.max_prompt_chars) == (40, 20, 500)
    assert args.default_output_format == "webp"
    assert "model_revision" not in render().application()["args"]


def test_deployment_options_come_from_values(default):
    deployment = default.sdxl_deployment
    assert deployment["max_ongoing_requests"] == 2
    assert deployment["max_queued_requests"] == 32
    assert deployment["graceful_shutdown_timeout_s"] == 120
    assert deployment["health_check_period_s"] == 10
    assert deployment["health_check_timeout_s"] == 30
    assert deployment["ray_actor_options"] == {
        "num_cpus": 8,
        "memory": 32 * 1024**3,
        "resources": {"neuron_cores": 2},
    }


def test_serve_proxy_listens_on_every_node_and_bounds_each_request_in_time(default):
    from app.local_run import REQUEST_TIMEOUT_S

    config = default.serve_config
    assert config["proxy_location"] == "EveryNode"
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000, "request_timeout_s": 300}
    assert REQUEST_TIMEOUT_S == 300  # the local run bounds requests as the chart does
    assert render({"serve": {"requestTimeoutS": 90}}).serve_config["http_options"]["request_timeout_s"] == 90


def test_autoscaling_replaces_fixed_replicas_with_serve_autoscaling():
    deployment = render(scenario="autoscaling").sdxl_deployment
    assert "num_replicas" not in deployment
    assert deployment["autoscaling_config"] == {
        "min_replicas": 12,
        "max_replicas": 48,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 30,
        "downscale_delay_s": 600,
    }


def test_ui_is_a_second_serve_application_without_neuron_cores():
    rendered = render({"ui": {"enabled": True}})
    ui = rendered.application("ui")
    assert ui["import_path"] == "app.ui:build_ui_app"
    assert ui["route_prefix"] == "/ui"
    assert ui["args"] == {"api_url": "http://127.0.0.1:8000/serve"}
    assert ui["deployments"] == [{"name": "SDXLWebUI", "ray_actor_options": {"num_cpus": 0.5}}]
    assert [app["name"] for app in render().serve_config["applications"]] == ["sdxl"]


def test_ui_args_are_accepted_by_the_ui_application():
    from app.ui_client import parse_ui_args

    rendered = render({"ui": {"enabled": True, "shareApiKey": True}, "apiKey": {"existingSecret": "sdxl-key"}})
    ui_args = parse_ui_args(rendered.application("ui")["args"])
    assert ui_args.api_url == "http://127.0.0.1:8000/serve"
    assert ui_args.api_key_env == "SDXL_API_KEY"


def test_by_default_the_ui_of_a_keyed_api_holds_no_key_so_visitors_bring_theirs():
    rendered = render({"ui": {"enabled": True}, "apiKey": {"existingSecret": "sdxl-key"}})
    assert rendered.application()["args"]["api_key_env"] == "SDXL_API_KEY"
    assert "api_key_env" not in rendered.application("ui")["args"]
    assert "asks for the API key" in rendered.notes and "WARNING: ui.shareApiKey" not in rendered.notes


def test_api_key_comes_from_an_existing_secret_into_the_ray_containers_and_app_args():
    rendered = render(
        {
            "apiKey": {"existingSecret": "sdxl-key", "secretKey": "token", "envName": "MY_KEY"},
            "ui": {"enabled": True, "shareApiKey": True},
        }
    )
    assert rendered.application()["args"]["api_key_env"] == "MY_KEY"
    assert rendered.application("ui")["args"]["api_key_env"] == "MY_KEY"
    assert "WARNING: ui.shareApiKey=true" in rendered.notes
    for container in (rendered.head_container, rendered.worker_container):
        env = {item["name"]: item for item in container["env"]}
        assert env["MY_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "sdxl-key", "key": "token"}}
    assert "api_key_env" not in render().application()["args"]


def test_hugging_face_token_and_extra_env_reach_the_ray_containers():
    rendered = render(scenario="karpenter")
    env = {item["name"]: item for item in rendered.worker_container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert env["NEURON_RT_LOG_LEVEL"]["value"] == "WARNING"
    assert rendered.worker_group["template"]["spec"]["imagePullSecrets"] == [{"name": "ecr-pull"}]
    assert rendered.worker_group["template"]["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    assert "HF_TOKEN" not in {item["name"] for item in render().worker_container["env"]}
