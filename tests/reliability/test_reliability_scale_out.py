"""Scale-out under load on Ray's real autoscaler: from one inf2-shaped node to several and back.

Runs ``bench/scale_out.py --quick`` (in its own interpreter: the driver there turns Ray's token auth
off for the clusters it starts, which is process-wide state) and checks what it recorded. The chart's
autoscaling scenario on inf2.xlarge-shaped fake nodes (2 NeuronCores, one 2-core replica each), its
node types derived by Ray's KubeRay translator, its serveConfigV2 deployed as KubeRay does; 40
closed-loop clients on loopback ramp up, hold and stop (up to 2 nodes here, 3 in the full run). Then the
control: the public blueprint's worker group, whose node type offers no neuron_cores. About 3 minutes on
2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from bench.fake_cluster import end_processes, marked_processes
from bench.scale_out import MIN_NODES, PROFILES, REQUEST_TIMEOUT_S
from tests.support.serve_cluster import REPO_ROOT

pytestmark = pytest.mark.ray

RUN_LIMIT_S = 480
QUICK = PROFILES["quick"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("scale_out") / "scale_out.json"
    token = uuid.uuid4().hex
    env = {**os.environ, "SDXL_FAKE_CLUSTER_TOKEN": token, "PYTHONPATH": str(REPO_ROOT)}
    command = [
        sys.executable,
        str(REPO_ROOT / "bench" / "scale_out.py"),
        "--quick",
        "--no-plot",
        "--quiet",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = process.communicate(timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the script ends its clusters' processes on the way out
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"bench/scale_out.py --quick ran past {RUN_LIMIT_S}s:\n{output[-4000:]}")
    finally:
        # Whatever happened to the script, no process of its clusters outlives the test.
        leftovers = marked_processes(token)
        if leftovers:
            end_processes(leftovers)
    assert process.returncode == 0, output[-6000:]
    summary = json.loads(out.read_text())
    print("\n" + output[output.find("| t (s)") :])
    return summary


def test_worker_nodes_grow_from_min_nodes_to_several_under_load_and_back_after_it(run):
    events = run["events_s"]
    assert run["nodes_start"] == MIN_NODES
    assert run["nodes_max"] >= 2
    assert run["nodes_end"] == MIN_NODES
    assert events["load_start"] < events["second_node_alive"] < events["load_stop"] < events["nodes_back_to_min"]


def test_serve_adds_replicas_that_wait_for_a_node_then_run_there_and_take_traffic(run):
    events = run["events_s"]
    assert run["replicas_max"] == QUICK.max_nodes  # one replica per inf2.xlarge node: the chart's arithmetic
    assert events["load_start"] < events["first_pending_replica"] <= events["second_node_alive"]
    served = run["replicas_that_served"]
    assert len({replica["node"] for replica in served}) >= 2, served


def test_every_answer_is_an_image_or_a_503_with_retry_after(run):
    statuses = run["status_counts"]
    assert set(statuses) <= {"200", "503"}, statuses
    assert statuses.get("200", 0) >= 100, statuses
    assert run["rejected_without_retry_after"] == 0


def test_no_client_waits_past_the_request_timeout(run):
    assert run["hung_clients"] == 0
    assert run["max_latency_s"] < REQUEST_TIMEOUT_S


def test_serve_scales_back_to_min_replicas_and_the_autoscaler_removes_the_idle_nodes(run):
    events = run["events_s"]
    assert run["replicas_end"] == 1
    assert events["load_stop"] < events["replicas_back_to_min"] <= events["nodes_back_to_min"]


def test_the_blueprint_shaped_worker_group_never_adds_a_node_while_replicas_wait(run):
    waited = QUICK.control_wait_s
    assert "neuron_cores" not in run["control_node_type"]["resources"]
    assert run["control_replicas_pending_max"] >= 1
    assert run["control_pending_at_end_of_load"] >= 1
    assert run["control_waited_s"] >= waited
    assert run["control_nodes_max"] == MIN_NODES
    assert run["control_nodes_launching_max"] == 0
    # The autoscaler says why: no node type it may launch offers what the replica asks for.
    assert run["control_autoscaler_infeasible_lines"] >= 1


def test_every_process_the_clusters_started_was_ended_by_pid(run):
    for key in ("processes", "control_processes"):
        processes = run[key]
        assert processes["started"] >= 10, processes  # head, autoscaler, fake nodes, workers
        assert processes["left"] == 0 and processes["left_after"] == 0, processes
