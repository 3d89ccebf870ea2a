"""Ray's fake multi-node provider, starting each node's raylet the way KubeRay starts a worker pod's.

Loaded by the Ray autoscaler (monitor process) of the fake cluster in ``bench/fake_cluster.py`` as
``provider: {type: external, module: bench.fake_provider.PodLikeFakeProvider}``.

Why not the stock ``fake_multinode`` provider: it starts a node with the node type's ``resources``
and passes every key other than CPU/GPU/object_store_memory to the raylet as a custom resource,
and ``memory`` is refused as one. On Kubernetes the two sides are separate anyway:

- the autoscaler plans with the node type Ray's KubeRay translator derives from the RayCluster
  (``ray/autoscaler/_private/kuberay/autoscaling_config.py``), memory included;
- the pod's raylet advertises what ``ray start`` in the pod gets: KubeRay's
  ``generateRayStartCommand`` (ray-operator/controllers/ray/common/pod.go) adds ``--num-cpus`` and
  ``--memory`` from the container limits and passes ``rayStartParams.resources``; on an inf2 pod
  without it, Ray's own Neuron detection (``ray/_private/accelerators/neuron.py``) still
  advertises ``neuron_cores``.

So here the node types stay the translator's, unchanged, and each node type's ``node_config``
carries ``raylet`` (what that pod's raylet advertises); this provider starts the fake node with it.
Everything else (node ids, tags, termination) is the stock provider's.
"""

from __future__ import annotations

import json

import ray
import ray._private.ray_constants as ray_constants
from ray._common.network_utils import build_address
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

#: The fake nodes join the GCS on this port (the stock provider's choice, kept: the head listens here).
GCS_PORT = 6379


class PodLikeFakeProvider(FakeMultiNodeProvider):
    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        raylet = node_config["raylet"]  # written by bench/fake_cluster.py; see the module docstring
        custom = dict(raylet.get("resources", {}))
        with self.lock:
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            node_id = self._next_hex_node_id()
            gcs = self._gcs_address or build_address(ray._private.services.get_node_ip_address(), GCS_PORT)
            params = ray._private.parameter.RayParams(
                gcs_address=gcs,
                redis_address=gcs,
                num_cpus=raylet["num_cpus"],
                num_gpus=0,
                memory=raylet["memory"],
                object_store_memory=raylet["object_store_memory"],
                resources=custom,
                labels=labels,
                min_worker_port=0,
                max_worker_port=0,
                dashboard_port=None,
                dashboard_agent_listen_port=0,
                env_vars={
                    # The autoscaler matches nodes by id (provider.use_node_id_as_ip).
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id,
                    "RAY_CLOUD_INSTANCE_ID": node_id,
                    "RAY_NODE_TYPE_NAME": node_type,
                    ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(custom),
                    ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels),
                },
            )
            node = ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            self._nodes[node_id] = {
                "tags": {
                    TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                    TAG_RAY_USER_NODE_TYPE: node_type,
                    TAG_RAY_NODE_NAME: node_id,
                    TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                    **tags,
                },
                "node": node,
            }
