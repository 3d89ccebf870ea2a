"""GCS fault tolerance (rayCluster.faultTolerance): rendered as KubeRay 1.7's gcsFaultToleranceOptions for
either backend, refused when incomplete, and said plainly in NOTES while it is off."""

from __future__ import annotations

from tests.chart.chartlib import render
from tests.chart.test_chart_upgrade import changed_paths, hash_excluded

REDIS = {"mode": "redis", "redis": {"address": "redis.example.internal:6379", "passwordSecret": "sdxl-redis"}}


def ft(values: dict) -> dict:
    return {"rayCluster": {"faultTolerance": values}}


def options(rendered) -> dict | None:
    return rendered.rayservice["spec"]["rayClusterConfig"].get("gcsFaultToleranceOptions")


def test_renders_no_fault_tolerance_by_default_and_notes_say_what_a_head_loss_costs():
    rendered = render()
    assert options(rendered) is None
    assert "WARNING: no GCS fault tolerance" in rendered.notes
    assert (
        "--set rayCluster.faultTolerance.mode=redis,rayCluster.faultTolerance.redis.address=<host:6379>"
        in rendered.notes
    )


def test_redis_takes_the_password_from_an_existing_secret_and_leaves_the_namespace_to_kuberay():
    rendered = render(ft(REDIS))
    assert options(rendered) == {
        "redisAddress": "redis.example.internal:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "sdxl-redis", "key": "password"}}},
    }
    # No externalStorageNamespace: KubeRay uses each RayCluster's UID, so an upgrade's second cluster has its own.
    assert "the RayCluster's UID (each cluster its own)" in rendered.notes
    assert "WARNING: no GCS fault tolerance" not in rendered.notes


def test_redis_username_and_a_fixed_namespace_are_passed_when_given():
    values = {**REDIS, "redis": {**REDIS["redis"], "username": "sdxl", "externalStorageNamespace": "sdxl-prod"}}
    rendered = options(render(ft(values)))
    assert rendered["redisUsername"] == {"value": "sdxl"} and rendered["externalStorageNamespace"] == "sdxl-prod"


def test_rocksdb_asks_kuberay_for_a_volume_and_notes_name_the_feature_gate():
    rendered = render(ft({"mode": "rocksdb", "rocksdb": {"storageClassName": "gp3", "size": "2Gi"}}))
    assert options(rendered) == {"backend": "rocksdb", "storage": {"size": "2Gi", "storageClassName": "gp3"}}
    assert "GCSFaultToleranceEmbeddedStorage=true" in rendered.notes


def test_turning_fault_tolerance_on_is_a_pod_level_change_that_builds_a_new_cluster():
    # gcsFaultToleranceOptions is in KubeRay's cluster hash (and backend is immutable on a live cluster).
    before, after = render(), render(ft(REDIS), upgrade=True)
    changed = changed_paths(before.rayservice, after.rayservice)
    assert any(not hash_excluded(path) for path in changed if path[:2] == ("spec", "rayClusterConfig"))
