"""Upgrade semantics: `helm upgrade --set replicas=...` or a new model id must change only
serveConfigV2 (applied in place by Serve) and fields KubeRay leaves out of its cluster hash (the worker
group's replica counts; since KubeRay 1.6.0 also tolerations). With an equal hash KubeRay does nothing
to the running RayCluster: a new workers.minNodes/maxNodes or toleration neither rebuilds nor reaches
it (only a kubectl patch of the live RayCluster, which NOTES.txt prints, the next cluster KubeRay
builds, or KubeRay copying the whole spec after an operator upgrade, does). Any other change under
rayClusterConfig makes KubeRay build a second cluster, i.e. twice the inf2 nodes during the switch."""

from __future__ import annotations

import difflib
import shutil

import pytest
import yaml

from tests.chart.chartlib import CHART_DIR, deep_merge, render, set_values

# What KubeRay v1.7.0 leaves out of its cluster hash (utils/util.go
# GenerateHashWithoutReplicasAndWorkersToDelete): every worker group's replicas, minReplicas, maxReplicas
# and workersToDelete; the head's and workers' pod tolerations and schedulingGates; upgradeStrategy.
AUTOSCALER_OWNED = {"replicas", "minReplicas", "maxReplicas"}
POD_SCHEDULING = {"tolerations", "schedulingGates"}


def hash_excluded(path: tuple) -> bool:
    """Whether KubeRay's cluster hash ignores a changed RayService path."""
    config = ("spec", "rayClusterConfig")
    if path[:3] == (*config, "workerGroupSpecs") and path[4] in AUTOSCALER_OWNED:
        return True
    in_head = path[:5] == (*config, "headGroupSpec", "template", "spec") and path[5] in POD_SCHEDULING
    in_worker = (
        path[:3] == (*config, "workerGroupSpecs") and path[4:6] == ("template", "spec") and path[6] in POD_SCHEDULING
    )
    return in_head or in_worker


def flatten(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from flatten(item, (*path, index))
    else:
        yield path, value


def changed_paths(before: dict, after: dict) -> set[tuple]:
    old, new = dict(flatten(before)), dict(flatten(after))
    return {path for path in old.keys() | new.keys() if old.get(path) != new.get(path)}


def objects(rendered) -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered.docs}


def upgrade(expression: str, base: dict | None = None):
    before = render(base or {})
    after = render(deep_merge(base or {}, set_values(expression)), upgrade=True)
    return before, after


def assert_in_place(before, after):
    """Only serveConfigV2 and autoscaler-owned worker counts differ; every other object is identical."""
    assert objects(before).keys() == objects(after).keys()
    for key, old in objects(before).items():
        new = objects(after)[key]
        if key[0] != "RayService":
            assert old == new, f"{key} changed on an in-place upgrade"
            continue
        forbidden = sorted(
            ".".join(map(str, path))
            for path in changed_paths(old, new)
            if path != ("spec", "serveConfigV2") and not hash_excluded(path)
        )
        assert not forbidden, f"upgrade changed {forbidden}"


def serve_config_diff(before, after) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(
            before.rayservice["spec"]["serveConfigV2"].splitlines(),
            after.rayservice["spec"]["serveConfigV2"].splitlines(),
            lineterm="",
            n=0,
        )
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_changing_replicas_changes_only_num_replicas_in_serve_config():
    before, after = upgrade("replicas=6")
    assert_in_place(before, after)
    assert serve_config_diff(before, after) == ["-    num_replicas: 12", "+    num_replicas: 6"]
    assert after.worker_group == before.worker_group


def test_replicas_beyond_one_node_change_only_worker_counts_that_kuberay_does_not_apply():
    # No rebuild, but also no new ceiling: the running RayCluster keeps maxReplicas=1 until it is
    # patched, so the Ray autoscaler cannot add the 2 extra nodes these 36 replicas need.
    before, after = upgrade("replicas=36,workers.maxNodes=3")
    assert_in_place(before, after)
    assert (after.worker_group["replicas"], after.worker_group["maxReplicas"]) == (3, 3)
    assert serve_config_diff(before, after) == ["-    num_replicas: 12", "+    num_replicas: 36"]


def test_changing_the_model_id_changes_only_model_id_in_serve_config():
    before, after = upgrade("model.id=my-org/sdxl-neuron-1024,model.revision=v2")
    assert_in_place(before, after)
    assert sorted(serve_config_diff(before, after)) == sorted(
        [
            "-    model_id: aws-neuron/stable-diffusion-xl-base-1-0-1024x1024",
            "+    model_id: my-org/sdxl-neuron-1024",
            "+    model_revision: v2",
        ]
    )


def test_autoscaling_bounds_change_without_rebuilding_the_cluster():
    # max_replicas reaches Serve in place; workers.maxNodes=4 reaches only a patched or new RayCluster.
    base = {"autoscaling": {"enabled": True, "maxReplicas": 24}, "workers": {"maxNodes": 2}}
    before, after = upgrade("autoscaling.maxReplicas=48,workers.maxNodes=4", base=base)
    assert_in_place(before, after)
    assert after.sdxl_deployment["autoscaling_config"]["max_replicas"] == 48


@pytest.mark.parametrize(
    ("expression", "changed"),
    [
        ("image.tag=0.2.0", "containers"),
        ("workers.instanceType=inf2.24xlarge,replicas=6", "resources.neuron_cores"),
        ("workers.headroom.cpu=4", "resources"),
    ],
)
def test_pod_level_changes_do_change_the_ray_cluster_spec(expression, changed):
    # The counterpart of the in-place tests: these upgrades rebuild the cluster, and the test
    # helper must notice, or the in-place assertions above prove nothing.
    before, after = upgrade(expression)
    with pytest.raises(AssertionError, match=changed):
        assert_in_place(before, after)


def test_a_new_chart_version_leaves_the_ray_cluster_spec_untouched(tmp_path):
    # Chart-version labels in the pod templates would rebuild the cluster on every chart upgrade.
    import helm_python

    copy = tmp_path / "chart"
    shutil.copytree(CHART_DIR, copy)
    chart_yaml = yaml.safe_load((copy / "Chart.yaml").read_text())
    chart_yaml["version"] = "9.9.9"
    (copy / "Chart.yaml").write_text(yaml.safe_dump(chart_yaml))
    bumped = helm_python.Chart.load(copy).render({"image": {"tag": "0.1.0"}}, name="sdxl", namespace="sdxl")
    new = yaml.safe_load(bumped["sdxl/templates/rayservice.yaml"])
    old = render().rayservice
    assert new["spec"] == old["spec"]
    assert new["metadata"]["labels"]["helm.sh/chart"] == "sdxl-9.9.9"


@pytest.mark.parametrize(
    "expression",
    [
        "ui.enabled=true",
        "autoscaling.enabled=true",
        "generation.maxSteps=40",
        "serve.maxOngoingRequests=4,serve.maxQueuedRequests=8",
        "model.batchSize=2,serve.maxOngoingRequests=2",
        "neuronCoresPerReplica=4,replicas=6",
    ],
)
def test_serve_level_values_leave_the_ray_cluster_spec_alone(expression):
    # Other objects may change (the UI adds an Ingress path); the Ray cluster must not be rebuilt.
    before, after = upgrade(expression)
    old, new = before.rayservice, after.rayservice
    forbidden = [
        path for path in changed_paths(old, new) if path != ("spec", "serveConfigV2") and not hash_excluded(path)
    ]
    assert not forbidden
    assert before.serve_config != after.serve_config


@pytest.mark.parametrize("group", ["head", "workers"])
def test_a_tolerations_only_upgrade_changes_nothing_kuberay_1_6_hashes_so_it_is_not_applied(group):
    # The honest reading: such an upgrade renders fine, but KubeRay leaves the running cluster as it is.
    toleration = {"key": "dedicated", "operator": "Equal", "value": "sdxl", "effect": "NoSchedule"}
    before = render()
    after = render({group: {"tolerations": [toleration]}}, upgrade=True)
    changed = changed_paths(before.rayservice, after.rayservice)
    assert changed and all(hash_excluded(path) for path in changed)
    assert "since 1.6, head/worker tolerations" in after.notes


def test_the_upgrade_strategy_is_explicit_and_can_be_turned_off():
    from tests.chart.chartlib import render_error

    assert render().rayservice["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert render({"rayService": {"upgradeStrategy": "None"}}).rayservice["spec"]["upgradeStrategy"] == {"type": "None"}
    # Incremental upgrades route through a Gateway API HTTPRoute this chart does not use.
    assert "/rayService/upgradeStrategy" in render_error(
        {"rayService": {"upgradeStrategy": "NewClusterWithIncrementalUpgrade"}}
    )
