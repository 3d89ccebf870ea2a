"""One line a second of what a scaling run looks like from outside and from Ray's side.

:class:`Observer` reads, from a driver connected to the cluster:

- Serve's view (the controller's details, the same data the dashboard's ``/api/serve/applications/``
  returns): target replicas, replicas RUNNING / STARTING, and among STARTING those with no worker
  process yet (pending: no node has room for them), each replica's node and pid; and the number
  Serve's autoscaling policy divides by ``target_ongoing_requests`` (running plus queued requests,
  averaged over ``look_back_period_s``), read through the controller's test hook;
- the nodes: alive worker nodes (``ray.nodes()``, the head excluded);
- the Ray autoscaler's own status report (GCS key ``__autoscaling_status``, what ``ray status``
  prints): nodes it is launching;
- the client side: requests in flight and the answers that finished in the last second (by
  status, with their p50 latency), from a :class:`bench.loadgen.AdjustableLoad`;
- each replica's CPU seconds once it is RUNNING (its model load and warm-up come before), which
  shows which replicas did take traffic.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import psutil

from bench import loadgen


@dataclass
class ReplicaSeen:
    node_id: str
    pid: int | None = None
    running_at: float | None = None  # seconds into the run when first seen RUNNING
    cpu_at_running: float | None = None
    cpu_last: float | None = None

    @property
    def busy_cpu_s(self) -> float:
        if self.cpu_at_running is None or self.cpu_last is None:
            return 0.0
        return self.cpu_last - self.cpu_at_running


def _cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


@dataclass
class Observer:
    app: str
    deployment: str
    started: float = field(default_factory=time.monotonic)
    rows: list[dict] = field(default_factory=list)
    replicas: dict[str, ReplicaSeen] = field(default_factory=dict)
    _answers_seen: int = 0

    def now(self) -> float:
        return time.monotonic() - self.started

    def serve_view(self) -> dict:
        from ray.serve.context import _get_global_client

        empty = {
            "target": 0,
            "running": 0,
            "starting": 0,
            "pending": 0,
            "app_status": "NOT_STARTED",
            "serve_metric": None,
        }
        try:
            details = _get_global_client().get_serve_details()
        except Exception:  # noqa: BLE001 (Serve not started yet, or its controller restarting: a sample, not a crash)
            return empty
        application = details.get("applications", {}).get(self.app)
        if not application:
            return empty
        deployment = application["deployments"].get(self.deployment)
        if not deployment:
            return {**empty, "app_status": application["status"]}
        view = {
            "target": deployment["target_num_replicas"],
            "running": 0,
            "starting": 0,
            "pending": 0,
            "app_status": application["status"],
            "serve_metric": None,
        }
        t = self.now()
        for replica in deployment["replicas"]:
            state = replica["state"]
            if state == "RUNNING":
                view["running"] += 1
            elif state == "STARTING":
                view["starting"] += 1
                if not replica.get("pid"):
                    view["pending"] += 1  # no worker process: the actor waits for a node with room
            # Fake node ids differ in their last digits only.
            seen = self.replicas.setdefault(
                replica["replica_id"], ReplicaSeen(node_id=(replica.get("node_id") or "")[-6:])
            )
            seen.node_id = (replica.get("node_id") or "")[-6:] or seen.node_id
            seen.pid = replica.get("pid") or seen.pid
            if state == "RUNNING" and seen.pid:
                cpu = _cpu_seconds(seen.pid)
                if seen.running_at is None:
                    seen.running_at, seen.cpu_at_running = t, cpu
                if cpu is not None:
                    seen.cpu_last = cpu
        view["serve_metric"] = self._serve_metric()
        return view

    def _serve_metric(self) -> float | None:
        import ray
        from ray.serve._private.common import DeploymentID
        from ray.serve.context import _get_global_client

        try:
            controller = _get_global_client()._controller
            value = ray.get(
                controller._get_total_num_requests_for_deployment_for_testing.remote(
                    DeploymentID(name=self.deployment, app_name=self.app)
                ),
                timeout=5,
            )
        except Exception:  # noqa: BLE001 (the controller may be mid-restart; the observer must keep sampling)
            return None
        return round(float(value), 2)

    @staticmethod
    def worker_nodes() -> int:
        import ray

        return sum(1 for node in ray.nodes() if node["Alive"] and "node:__internal_head__" not in node["Resources"])

    @staticmethod
    def nodes_launching() -> int:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        if not raw:
            return 0
        report = json.loads(raw).get("autoscaler_report") or {}
        return sum((report.get("pending_launches") or {}).values()) + len(report.get("pending_nodes") or [])

    def tick(self, phase: str, load: loadgen.AdjustableLoad | None) -> dict:
        t = self.now()
        serve_view = self.serve_view()
        answers = []
        if load is not None:
            answers = load.samples[self._answers_seen :]
            self._answers_seen += len(answers)
        statuses: dict[str, int] = {}
        for sample in answers:
            statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
        ok_latencies = [sample.latency for sample in answers if sample.status == 200]
        row = {
            "t": round(t, 1),
            "phase": phase,
            "clients": load.clients if load else 0,
            "in_flight": load.in_flight if load else 0,
            "replicas_target": serve_view["target"],
            "replicas_running": serve_view["running"],
            "replicas_starting": serve_view["starting"],
            "replicas_pending": serve_view["pending"],
            "serve_metric": serve_view["serve_metric"],
            "worker_nodes": self.worker_nodes(),
            "nodes_launching": self.nodes_launching(),
            "answers": statuses,
            "ok": len(ok_latencies),
            "p50_s": round(loadgen.percentile(ok_latencies, 50), 3) if ok_latencies else None,
        }
        self.rows.append(row)
        return row

    def replicas_that_served(self, min_cpu_s: float = 0.5) -> list[dict]:
        return [
            {
                "replica": replica_id[-8:],
                "node": seen.node_id,
                "running_at_s": seen.running_at,
                "busy_cpu_s": round(seen.busy_cpu_s, 1),
            }
            for replica_id, seen in self.replicas.items()
            if seen.busy_cpu_s >= min_cpu_s
        ]
