"""What the Ray autoscaler will see of the chart, computed by the autoscaler's own code.

The KubeRay autoscaler sidecar turns the RayCluster into node types with Ray 2.60's
``_derive_autoscaling_config_from_ray_cr``. Each test feeds it the ``rayClusterConfig`` the chart
renders (wrapped as the RayCluster KubeRay creates) and asserts on its output, never on how the
chart spells ``rayStartParams``: a new node of the worker group must offer the node's NeuronCores,
the CPU and memory the worker container gets, and as many replicas as the chart's arithmetic says.
The public blueprint's worker group, fed to the same code, offers no NeuronCores at all: the reason
its autoscaler never adds a node (ray-project/ray#44361). No Ray process is started.
"""

from __future__ import annotations

import copy

import pytest
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

from bench.autoscaler_view import seed_shaped
from tests.chart.chartlib import render

#: EC2 facts (NeuronCores, Neuron devices, vCPUs, memory GiB), written here independently of the
#: chart's instance table so that a typo there fails a test.
EC2 = {
    "inf2.xlarge": (2, 1, 4, 16),
    "inf2.8xlarge": (2, 1, 32, 128),
    "inf2.24xlarge": (12, 6, 96, 384),
    "inf2.48xlarge": (24, 12, 192, 768),
    "trn1.2xlarge": (2, 1, 8, 32),
    "trn1.32xlarge": (32, 16, 128, 512),
    "trn1n.32xlarge": (32, 16, 128, 512),
}
#: The chart's default headroom (values.yaml workers.headroom): 2 vCPU, 10 % and 4 GiB of memory.
HEADROOM_CPU, HEADROOM_PERCENT, HEADROOM_GIB = 2, 10, 4


def autoscaler_view(rendered) -> dict:
    """The autoscaling config the KubeRay sidecar derives from the RayCluster of ``rendered``."""
    spec = rendered.rayservice["spec"]["rayClusterConfig"]
    return derive(spec)


def derive(ray_cluster_spec: dict) -> dict:
    ray_cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "sdxl-x7k2p", "namespace": "sdxl"},
        "spec": copy.deepcopy(ray_cluster_spec),
    }
    return _derive_autoscaling_config_from_ray_cr(ray_cluster)


def worker_type(config: dict) -> dict:
    (name,) = [name for name in config["available_node_types"] if name != config["head_node_type"]]
    return config["available_node_types"][name]


def expected_node(instance_type: str) -> dict:
    cores, _, vcpu, memory_gib = EC2[instance_type]
    memory_mib = memory_gib * 1024 * (100 - HEADROOM_PERCENT) // 100 - HEADROOM_GIB * 1024
    return {"CPU": vcpu - HEADROOM_CPU, "memory": memory_mib * 2**20, "neuron_cores": cores}


def replica_demand(rendered) -> dict:
    """One Serve replica's resource request, as the autoscaler receives it from a pending actor."""
    options = rendered.sdxl_deployment["ray_actor_options"]
    return {"CPU": options["num_cpus"], "memory": options["memory"], **options["resources"]}


def replicas_that_fit(node_resources: dict, demand: dict) -> int:
    return min(int(node_resources.get(name, 0) // amount) for name, amount in demand.items() if amount)


#: The chart's defaults and its autoscaling scenario (chart/ci/autoscaling-values.yaml).
SCENARIOS = {"default": None, "autoscaling": "autoscaling"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_new_worker_node_offers_the_nodes_neuron_cores_cpu_and_memory(scenario):
    node = worker_type(autoscaler_view(render(scenario=SCENARIOS[scenario])))
    assert node["resources"] == expected_node("inf2.48xlarge")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_autoscaler_plans_twelve_two_core_replicas_per_inf2_48xlarge(scenario):
    rendered = render(scenario=SCENARIOS[scenario])
    node = worker_type(autoscaler_view(rendered))
    assert replicas_that_fit(node["resources"], replica_demand(rendered)) == 12


@pytest.mark.parametrize(("scenario", "min_nodes", "max_nodes"), [("default", 1, 1), ("autoscaling", 1, 4)])
def test_worker_counts_and_idle_timeout_come_from_workers_values(scenario, min_nodes, max_nodes):
    rendered = render(scenario=SCENARIOS[scenario])
    config = autoscaler_view(rendered)
    node = worker_type(config)
    assert (node["min_workers"], node["max_workers"]) == (min_nodes, max_nodes)
    assert config["max_workers"] == max_nodes
    assert config["idle_timeout_minutes"] == 600 / 60


def test_the_head_offers_no_cpu_and_no_neuron_cores_so_no_replica_lands_there():
    config = autoscaler_view(render(scenario="autoscaling"))
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    assert "neuron_cores" not in head["resources"]
    assert head["max_workers"] == 0


@pytest.mark.parametrize("instance_type", sorted(EC2))
def test_every_instance_type_of_the_chart_gives_the_autoscaler_its_ec2_shape(instance_type):
    cores = EC2[instance_type][0]
    rendered = render(
        {
            "workers": {"instanceType": instance_type, "minNodes": 0, "maxNodes": 3, "idleTimeoutSeconds": 90},
            "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3 * (cores // 2)},
            # Small enough for the smallest type (inf2.xlarge: 2 vCPU and ~10 GiB for the worker).
            "serve": {"replicaCpus": 1, "replicaMemoryMiB": 2048},
        }
    )
    config = autoscaler_view(rendered)
    node = worker_type(config)
    assert node["resources"] == expected_node(instance_type)
    assert (node["min_workers"], node["max_workers"]) == (0, 3)
    assert config["idle_timeout_minutes"] == 1.5
    # Replicas per node: the NeuronCores are what binds, 2 per replica.
    assert replicas_that_fit(node["resources"], replica_demand(rendered)) == cores // 2


@pytest.mark.parametrize(("mode", "speed"), [("Default", 1000), ("Aggressive", 1000), ("Conservative", 1)])
def test_upscaling_mode_becomes_the_autoscalers_upscaling_speed(mode, speed):
    config = autoscaler_view(render({"rayCluster": {"upscalingMode": mode}}, scenario="autoscaling"))
    assert config["upscaling_speed"] == speed


def test_the_blueprints_worker_group_offers_the_autoscaler_no_neuron_cores():
    rendered = render(scenario="autoscaling")
    seed = seed_shaped(rendered.rayservice["spec"]["rayClusterConfig"], neuron_devices=EC2["inf2.48xlarge"][1])
    group = seed["workerGroupSpecs"][0]
    assert "resources" not in group["rayStartParams"] and "resources" not in group
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["aws.amazon.com/neuron"] == "12"
    node = worker_type(derive(seed))
    assert "neuron_cores" not in node["resources"]
    # So a pending replica, which asks for neuron_cores, fits on no node the autoscaler could add.
    assert replicas_that_fit(node["resources"], replica_demand(rendered)) == 0


@pytest.mark.parametrize("form", ["rendered", "kuberay_emitted", "group_resources"])
def test_any_spelling_of_the_neuron_cores_resource_reaches_the_autoscaler(form):
    """The chart may write the resource as it does today, as KubeRay writes it into rayStartParams
    (single quotes, compact JSON), or in the group-level ``resources`` field (KubeRay >= 1.5, which
    takes precedence): the autoscaler must see the same node either way."""
    rendered = render(scenario="autoscaling")
    spec = copy.deepcopy(rendered.rayservice["spec"]["rayClusterConfig"])
    group = spec["workerGroupSpecs"][0]
    if form == "kuberay_emitted":
        group["rayStartParams"]["resources"] = "'{\"neuron_cores\":24}'"
    elif form == "group_resources":
        group["rayStartParams"].pop("resources", None)
        group["resources"] = {"neuron_cores": "24"}
    assert worker_type(derive(spec))["resources"] == expected_node("inf2.48xlarge")
