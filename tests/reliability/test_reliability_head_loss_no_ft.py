"""Ray's head pod lost under load without GCS fault tolerance (the chart's default today): what a user sees.

The same multi-node Ray as test_reliability_cluster_faults.py (bench/fault_cluster.py), with no GCS store
outside the head pod. Every process of the head pod is SIGKILLed and no head comes back during the drill.

The workers' ``RAY_gcs_rpc_server_reconnect_timeout_s`` is shortened from Ray's default 60 s to 8 s, so
that the drill shows within the suite's time budget what the default does after a minute: a raylet
that cannot reach a GCS for that long exits, and its pod's Ray processes (proxy, replicas) end with it.
What follows on Kubernetes (a new head pod with an empty GCS, whose different cluster ID makes any
surviving raylet exit at once; worker containers restarted; serveConfigV2 submitted again by KubeRay;
every replica loading its model again) is measured by ``bench/faults.py`` (scenario head_loss_no_ft).
"""

from __future__ import annotations

import pytest

from bench.fault_cluster import FaultCluster
from bench.fault_scenarios import CHART_VALUES, CLIENT_TIMEOUT_S, STEADY_AFTER_S, head_loss

pytestmark = pytest.mark.ray

RECONNECT_TIMEOUT_S = 8
HEAD_DOWN_S = 12.0
#: A raylet exits within this long after its reconnect timeout, and its container right after.
EXIT_SLACK_S = 6.0
WORKERS = 2


@pytest.fixture(scope="module")
def drill():
    with FaultCluster.of_chart(
        CHART_VALUES,
        fault_tolerance=None,
        worker_gcs_reconnect_timeout_s=RECONNECT_TIMEOUT_S,
        workers=WORKERS,
    ) as cluster:
        result = head_loss(cluster, down_s=HEAD_DOWN_S, restore=False)
    print(f"\nhead loss without GCS fault tolerance: {result.summary}")
    return result


def test_requests_are_served_until_the_workers_give_up_on_the_gcs(drill):
    # The proxies and replicas on the workers do not need the GCS to serve: until the reconnect
    # timeout ends the raylets (and with them the pod's Ray processes), every request gets its image.
    gives_up = drill.fault_at + RECONNECT_TIMEOUT_S
    served_window = [s for s in drill.samples if drill.fault_at <= s.started and s.finished < gives_up]
    assert served_window, "no request ran between the head loss and the reconnect timeout"
    assert all(s.status == 200 for s in served_window), {s.status for s in served_window}


def test_every_worker_raylet_exits_once_the_reconnect_timeout_passes(drill):
    exits = {e["pod"]: e for e in drill.summary["worker_exits"]}
    assert sorted(exits) == [f"worker{i + 1}" for i in range(WORKERS)], exits
    for worker_exit in exits.values():
        assert RECONNECT_TIMEOUT_S <= worker_exit["raylet_exit_s"] < RECONNECT_TIMEOUT_S + EXIT_SLACK_S, worker_exit
        # ray start --block, the container's main process, ends too: the kubelet restarts the container.
        assert worker_exit["container_exit_s"] is not None, worker_exit
        assert "Failed to connect to GCS" in (worker_exit["reason"] or ""), worker_exit


def test_every_replica_process_is_gone(drill):
    assert drill.summary["replicas_lost"] == WORKERS
    assert drill.summary["replica_processes_after"] == 0


def test_requests_fail_fast_once_the_workers_are_gone(drill):
    summary = drill.summary
    gives_up = drill.fault_at + RECONNECT_TIMEOUT_S
    failures = [s for s in drill.samples if s.status != 200]
    assert failures, "no request failed after the workers exited"
    # In flight when the workers' Ray processes end: the connection closes without an answer. Sent
    # later: refused at once. Never a wait for an answer that cannot come.
    assert all(s.finished >= gives_up for s in failures), "requests failed before the reconnect timeout"
    last_exit = drill.fault_at + max(e["container_exit_s"] for e in summary["worker_exits"])
    after = [s for s in drill.samples if s.started > last_exit]
    assert after and all(s.status != 200 for s in after)
    assert summary["downtime_s"] >= HEAD_DOWN_S + STEADY_AFTER_S - RECONNECT_TIMEOUT_S - EXIT_SLACK_S
    assert summary["hung"] == 0 and summary["max_latency_s"] < CLIENT_TIMEOUT_S
