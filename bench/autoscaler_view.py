"""What the Ray autoscaler sees of the chart's RayCluster, computed by Ray's own code.

- :func:`kuberay_autoscaling_config`: the autoscaling config the KubeRay autoscaler sidecar derives
  from a RayCluster (Ray 2.60's ``_derive_autoscaling_config_from_ray_cr``), for the
  ``rayClusterConfig`` of a rendered RayService (``bench.chart_render``).
- :func:`seed_shaped`: the same cluster with the worker group written the way the public AWS
  blueprint writes it (no ``resources`` in ``rayStartParams``, the container requests whole Neuron
  devices): the shape whose autoscaler never sees ``neuron_cores`` (ray-project/ray#44361).
- :func:`fake_cluster_config`: those node types as a cluster config for Ray's fake multi-node
  provider (``bench/fake_provider.py``), each with the resources its pod's raylet advertises.
"""

from __future__ import annotations

import copy

#: The name KubeRay gives the RayCluster of a RayService is <name>-<suffix>; any name does here.
CLUSTER_NAME = "sdxl-scale"
NAMESPACE = "sdxl"
#: Ray's fake provider names the head node type so (ray/autoscaler/_private/fake_multi_node/node_provider.py).
FAKE_HEAD_TYPE = "ray.head.default"
#: The KubeRay translator's name of the head node type.
KUBERAY_HEAD_TYPE = "headgroup"


def ray_cluster(ray_cluster_config: dict) -> dict:
    """A RayCluster whose spec is ``ray_cluster_config``, as KubeRay creates it for a RayService."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": CLUSTER_NAME, "namespace": NAMESPACE},
        "spec": copy.deepcopy(ray_cluster_config),
    }


def kuberay_autoscaling_config(ray_cluster_config: dict) -> dict:
    """The autoscaling config the KubeRay autoscaler sidecar reads from this RayCluster spec."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    return _derive_autoscaling_config_from_ray_cr(ray_cluster(ray_cluster_config))


def seed_shaped(ray_cluster_config: dict, neuron_devices: int) -> dict:
    """``ray_cluster_config`` with its worker group in the blueprint's shape.

    No ``resources`` in ``rayStartParams`` or on the group, and the container requests
    ``aws.amazon.com/neuron`` (whole devices), which KubeRay does not map to a Ray resource
    (only ``aws.amazon.com/neuroncore`` is, pod.go customAcceleratorToRayResourceMap).
    """
    spec = copy.deepcopy(ray_cluster_config)
    for group in spec["workerGroupSpecs"]:
        group["rayStartParams"].pop("resources", None)
        group.pop("resources", None)
        container = group["template"]["spec"]["containers"][0]
        for kind in ("requests", "limits"):
            quantities = container["resources"][kind]
            for name in [name for name in quantities if name.startswith("aws.amazon.com/neuron")]:
                del quantities[name]
            quantities["aws.amazon.com/neuron"] = str(neuron_devices)
    return spec


def pod_raylet(node_type: dict, neuron_cores_on_node: int, object_store_memory: int) -> dict:
    """What ``ray start`` in a pod of ``node_type`` advertises on a real inf2 node.

    CPU and memory: KubeRay passes ``--num-cpus``/``--memory`` from the same container fields the
    translator reads (limits first), so they equal the node type's. Custom resources: those the
    group declares; ``neuron_cores`` is there even when the group does not declare it, because
    Ray detects the NeuronCores it sees (``NeuronAcceleratorManager``). The object store is the one
    thing scaled down (this machine's /dev/shm), and it is not a schedulable resource.
    """
    resources = node_type["resources"]
    custom = {name: value for name, value in resources.items() if name not in ("CPU", "GPU", "memory")}
    if neuron_cores_on_node:
        custom.setdefault("neuron_cores", neuron_cores_on_node)
    return {
        "num_cpus": int(resources["CPU"]),
        "memory": int(resources["memory"]),
        "object_store_memory": object_store_memory,
        "resources": custom,
    }


def fake_cluster_config(
    autoscaling_config: dict, neuron_cores_on_node: int, object_store_memory: int = 128 * 2**20
) -> dict:
    """The KubeRay autoscaling config, run by Ray's autoscaler against fake nodes on this machine.

    Kept as the translator wrote it: every node type's ``resources``, min/max workers, the idle
    timeout and the upscaling speed. Mapped: the provider (``bench.fake_provider``, which starts
    each node with ``node_config["raylet"]``, see :func:`pod_raylet`) and the head type's name
    (the fake provider tags its head ``ray.head.default``).
    """
    config = copy.deepcopy(autoscaling_config)
    kuberay_provider = config.pop("provider")
    config["provider"] = {
        **{key: value for key, value in kuberay_provider.items() if key not in ("type", "namespace")},
        "type": "external",
        "module": "bench.fake_provider.PodLikeFakeProvider",
        # Fake nodes share this machine's IP: the autoscaler tells them apart by node id.
        "use_node_id_as_ip": True,
        # KubeRay raises the group's replica count by the whole number asked for at once.
        "launch_multiple": True,
    }
    node_types = config.pop("available_node_types")
    head = node_types.pop(KUBERAY_HEAD_TYPE)
    head["node_config"] = {"raylet": pod_raylet(head, 0, object_store_memory)}
    for node_type in node_types.values():
        node_type["node_config"] = {"raylet": pod_raylet(node_type, neuron_cores_on_node, object_store_memory)}
    config["available_node_types"] = {FAKE_HEAD_TYPE: head, **node_types}
    config["head_node_type"] = FAKE_HEAD_TYPE
    return config
