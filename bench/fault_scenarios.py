"""Fault drills on a :class:`bench.fault_cluster.FaultCluster` under load, measured the way a user sees them.

Every drill runs a bounded closed-loop load (``CLIENTS`` clients, ``CLIENT_TIMEOUT_S`` each) and a
``/healthz`` probe through one worker pod's Serve proxy (the chart's Serve Service sends traffic only
to workers), plus KubeRay's readiness check of that pod, and returns a :class:`Drill`: the raw samples
and a JSON-able ``summary`` with at least

- ``requests``: requests sent during the drill; ``failed``: answers other than 200 plus requests that
  got no answer; ``hung``: requests that got no answer within the client timeout;
- ``downtime_s``: the longest stretch after the fault without a successful answer;
- ``replica_restarts``: replica processes started after the fault (each loads the model again);
  ``replicas_lost``: replica processes alive before the fault and gone after.

Head loss (:func:`head_loss`) kills the whole head pod, keeps it down, starts a new head pod and lets
KubeRay's and the kubelet's reactions happen (see FaultCluster). Node loss (:func:`node_loss`) SIGKILLs a
worker pod that holds a replica, or stops it gracefully as pod deletion does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
import time
from dataclasses import dataclass, field

import httpx
import psutil

from bench import loadgen
from bench.fault_cluster import API_APP, FaultCluster, Pod, http_get, wait_for

#: The image size of every request in the drills (the smallest, so a 2-core machine carries 12 clients).
DRILL_SIZE = (64, 64)
#: The chart values the drills deploy: the cpu-local scenario (embedded model), web UI off, and one
#: replica per 2-core worker node (the chart's default ratio of NeuronCores per replica), so replicas
#: land on distinct worker nodes and a lost node's replica has to move to another (workers.maxNodes
#: leaves room for the spare nodes the drills add).
CHART_VALUES = {
    "ui": {"enabled": False},
    "neuronCoresPerReplica": 2,
    "workers": {"maxNodes": 4},
    "model": {"imageSizes": [f"{DRILL_SIZE[0]}x{DRILL_SIZE[1]}"]},
}
#: More clients than one replica takes at once (the chart's cpu-local maxOngoingRequests: 8): a worker's
#: proxy routes to the replica on its own node first (Serve's prefer-local routing) and sends the
#: overflow to replicas on other nodes, so the drills also carry requests across nodes.
CLIENTS = 12
CLIENT_TIMEOUT_S = 30.0
#: Successful answers to see before a fault, so the load is steady when it strikes.
WARM_SUCCESSES = 8
#: How long the load runs on after recovery, to show that service is steady again.
STEADY_AFTER_S = 3.0
#: Kubernetes' default terminationGracePeriodSeconds (the chart sets none on the Ray pods).
POD_GRACE_S = 30.0


@dataclass
class HealthProbe:
    at: float
    status: int
    seconds: float
    says_ok: bool


@dataclass
class Traffic:
    """Load, a ``/healthz`` probe and KubeRay's readiness check against one worker pod, in background threads."""

    pod: Pod
    url: str
    samples: list[loadgen.Sample] = field(default_factory=list)
    health: list[HealthProbe] = field(default_factory=list)
    readiness: list[tuple[float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        self._threads = [
            threading.Thread(target=target, daemon=True)
            for target in (self._load, self._probe_health, self._probe_readiness)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 15)

    def _load(self) -> None:
        def factory(index: int):
            return (
                "GET",
                f"{self.url}/imagine",
                {"params": {"prompt": f"fault drill {index}", "width": DRILL_SIZE[0], "height": DRILL_SIZE[1]}},
            )

        asyncio.run(
            loadgen.run_closed_loop(
                factory,
                concurrency=CLIENTS,
                stop=self._stop.is_set,
                timeout_s=CLIENT_TIMEOUT_S,
                backoff_on_503_s=0.5,
                backoff_on_error_s=0.5,
                on_sample=self.samples.append,
            )
        )

    def _probe_health(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.get(f"{self.url}/healthz")
                    says_ok = response.status_code == 200 and response.json().get("status") == "ok"
                    status = response.status_code
                except (httpx.HTTPError, ValueError):
                    status, says_ok = 0, False
                self.health.append(HealthProbe(started, status, time.monotonic() - started, says_ok))
                self._stop.wait(0.25)

    def _probe_readiness(self) -> None:
        while not self._stop.is_set():
            self.readiness.append((time.monotonic(), self.pod.kuberay_worker_ready()))
            self._stop.wait(1.0)

    def wait_warm(self) -> None:
        wait_for(
            lambda: sum(1 for s in self.samples if s.status == 200) >= WARM_SUCCESSES,
            120,
            "the load did not get steady answers before the fault",
        )


@dataclass
class Drill:
    summary: dict
    samples: list[loadgen.Sample]
    health: list[HealthProbe]
    readiness: list[tuple[float, bool]]
    fault_at: float
    recovered_at: float | None


def _longest_gap(points: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def request_outcome(samples: list[loadgen.Sample], fault_at: float, until: float) -> dict:
    ok_after = sorted(s.finished for s in samples if s.status == 200 and s.finished >= fault_at)
    in_flight = [s for s in samples if s.started < fault_at < s.finished]
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    return {
        "requests": len(samples),
        "failed": sum(1 for s in samples if s.status != 200),
        "hung": sum(1 for s in samples if s.status == 0 and "Timeout" in s.error),
        "downtime_s": round(_longest_gap([fault_at, *ok_after, until]), 1),
        "statuses": statuses,
        "in_flight_at_fault": len(in_flight),
        "in_flight_at_fault_failed": sum(1 for s in in_flight if s.status != 200),
        "max_latency_s": round(max((s.latency for s in samples), default=0.0), 2),
    }


def _probe_outcome(traffic: Traffic, fault_at: float) -> dict:
    after = [h for h in traffic.health if h.at >= fault_at]
    not_ready = [at for at, ready in traffic.readiness if at >= fault_at and not ready]
    return {
        "healthz_statuses": sorted({h.status for h in after}),
        "healthz_slowest_s": round(max((h.seconds for h in after), default=0.0), 2),
        "kuberay_readiness_failures": len(not_ready),
        "kuberay_readiness_checks": sum(1 for at, _ in traffic.readiness if at >= fault_at),
    }


def _replica_identity(cluster: FaultCluster) -> dict[str, str]:
    return {r["replica_id"]: r["actor_id"] for r in cluster.replicas()}


def _front_and_victim(cluster: FaultCluster) -> tuple[Pod, Pod | None]:
    hosts = [pod for pod in cluster.workers if pod.alive() and pod.replica_pids()]
    if not hosts:
        raise RuntimeError("no worker pod holds a replica")
    return hosts[0], (hosts[1] if len(hosts) > 1 else None)


def _raylet_exit_reason(pod: Pod) -> str | None:
    """The raylet's fatal log line, as ``ray start --block`` repeats it in the container's log."""
    text = (pod.logdir / f"{pod.name}.{pod.starts}.log").read_text(errors="replace")
    if "BEGIN raylet.err tail" not in text:
        return None
    match = re.search(r"\(raylet\) ([\w.]+:\d+: [^\n]{0,220})", text.split("BEGIN raylet.err tail", 1)[1])
    return match.group(1) if match else None


@dataclass
class WorkerWatch:
    """When each worker pod's original raylet, and then its container, exited after a fault."""

    since: float
    raylets: dict[str, psutil.Process]
    exits: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def of(cls, cluster: FaultCluster, since: float) -> WorkerWatch:
        raylets = {}
        for pod in cluster.workers:
            for proc in pod.processes():
                with contextlib.suppress(psutil.Error):
                    if proc.name() == "raylet":
                        raylets[pod.name] = proc
        return cls(since=since, raylets=raylets)

    def poll(self, cluster: FaultCluster) -> None:
        now = round(time.monotonic() - self.since, 1)
        for pod in cluster.workers:
            record = self.exits.setdefault(
                pod.name, {"pod": pod.name, "raylet_exit_s": None, "container_exit_s": None, "reason": None}
            )
            raylet = self.raylets.get(pod.name)
            if record["raylet_exit_s"] is None and raylet is not None and not _running(raylet):
                record["raylet_exit_s"] = now
            if record["container_exit_s"] is None and pod.starts == 1 and not pod.alive():
                record["container_exit_s"] = now
                record["reason"] = _raylet_exit_reason(pod)

    def summary(self) -> list[dict]:
        return [
            record
            for record in self.exits.values()
            if record["raylet_exit_s"] is not None or record["container_exit_s"] is not None
        ]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def head_loss(cluster: FaultCluster, *, down_s: float, restore: bool = True, recover_timeout_s: float = 300.0) -> Drill:
    """Lose the head pod under load for ``down_s`` seconds, then start a new one; measure until served again.

    While the head is down nothing is restarted (a real head pod restart also takes a while). After
    the new head pod starts, twice a second: pod containers whose ``ray start`` exited are restarted
    (the kubelet), and serveConfigV2 is PUT again if the head reports no application (KubeRay).
    ``restore=False`` ends the drill when the head has been down ``down_s`` (plus STEADY_AFTER_S).
    """
    cluster.wait_running()
    front, _ = _front_and_victim(cluster)
    before_processes = cluster.replica_processes()
    before_ids = _replica_identity(cluster)
    controller_before = cluster.serve_details()["controller_info"]["actor_id"]
    restarts = {"workers": 0, "head": 0, "resubmits": 0}
    with Traffic(front, cluster.api_url(front)) as traffic:
        traffic.wait_warm()
        killed_at = time.monotonic()
        watch = WorkerWatch.of(cluster, killed_at)
        head_processes = cluster.head.kill()
        while time.monotonic() < killed_at + down_s:
            watch.poll(cluster)
            time.sleep(0.1)
        restarted_at = time.monotonic()
        controller_back_at = recovered_at = None
        if restore:
            cluster.start_head()
        else:
            while time.monotonic() < restarted_at + STEADY_AFTER_S:
                watch.poll(cluster)
                time.sleep(0.1)
        while restore and time.monotonic() < restarted_at + recover_timeout_s:
            watch.poll(cluster)
            restarted = cluster.restart_exited_containers()
            restarts["workers"] += sum(name != cluster.head.name for name in restarted)
            restarts["head"] += cluster.head.name in restarted
            restarts["resubmits"] += cluster.kuberay_resubmit_if_empty()
            try:
                if controller_back_at is None and (cluster.serve_details().get("applications") or {}).get(API_APP):
                    controller_back_at = time.monotonic()
                if cluster.serving():
                    recovered_at = time.monotonic()
                    break
            except (OSError, ValueError):
                pass  # the new head's dashboard is not up yet
            time.sleep(0.5)
        if recovered_at is not None:
            wait_for(
                lambda: http_get(f"{cluster.api_url(front)}/healthz")[0] == 200,
                60,
                "the front proxy did not serve again",
            )
            time.sleep(STEADY_AFTER_S)
        until = time.monotonic()
    after_processes = cluster.replica_processes()
    after_ids = _replica_identity(cluster) if recovered_at else {}
    controller_after = cluster.serve_details()["controller_info"]["actor_id"] if recovered_at else None
    samples = traffic.samples
    during = [s for s in samples if killed_at <= s.started < restarted_at]
    summary = {
        **request_outcome(samples, killed_at, until),
        "replica_restarts": len(set(after_processes) - set(before_processes)),
        "replicas_lost": len(set(before_processes) - set(after_processes)),
        "replica_processes_after": len(after_processes),
        "same_replica_processes": after_processes == before_processes,
        "same_replica_actors": bool(after_ids) and after_ids == before_ids,
        "head_down_s": round(restarted_at - killed_at, 1) if restore else None,
        "head_processes_killed": head_processes,
        "requests_while_head_down": len(during),
        "failed_while_head_down": sum(1 for s in during if s.status != 200),
        "controller_back_s": round(controller_back_at - restarted_at, 1) if controller_back_at else None,
        "controller_same_actor": controller_after == controller_before if controller_after else None,
        "recovered_s": round(recovered_at - killed_at, 1) if recovered_at else None,
        "serveconfig_resubmits": restarts["resubmits"],
        "worker_container_restarts": restarts["workers"],
        "head_container_restarts": restarts["head"],
        "worker_exits": watch.summary(),
        **_probe_outcome(traffic, killed_at),
    }
    return Drill(summary, samples, traffic.health, traffic.readiness, killed_at, recovered_at)


def node_loss(
    cluster: FaultCluster, *, graceful: bool, grace_s: float = POD_GRACE_S, recover_timeout_s: float = 180.0
) -> Drill:
    """Lose a worker pod that holds a replica (not the one traffic enters through) under load.

    ``graceful=False``: every process of the pod SIGKILLed (instance terminated, kernel panic).
    ``graceful=True``: the kubelet's pod deletion (SIGTERM to ``ray start``, SIGKILL after ``grace_s``),
    which is what Karpenter's consolidation and spot interruption handling end in.
    """
    cluster.wait_running()
    front, victim = _front_and_victim(cluster)
    if victim is None:
        raise RuntimeError("the replicas share one worker pod; a node drill needs them on two")
    victim_replicas = victim.replica_pids()
    before_processes = cluster.replica_processes()
    victim_node = {r["node_id"] for r in cluster.replicas() if r.get("pid") in victim_replicas}
    with Traffic(front, cluster.api_url(front)) as traffic:
        traffic.wait_warm()
        fault_at = time.monotonic()
        stopped: dict = {}
        if graceful:  # the kubelet waits for the pod while the cluster reacts: watch it meanwhile
            stopper = threading.Thread(target=lambda: stopped.update(s=victim.terminate(grace_s)))
            stopper.start()
        else:
            victim.kill()
            stopped["s"] = 0.0
        replacement_at = recovered_at = None
        while time.monotonic() < fault_at + recover_timeout_s:
            fresh = set(cluster.replica_processes()) - set(before_processes)
            if fresh and replacement_at is None:
                replacement_at = time.monotonic()
            serving = cluster.serving()
            if serving and not {r["node_id"] for r in serving} & victim_node:
                recovered_at = time.monotonic()
                break
            time.sleep(0.25)
        if graceful:
            stopper.join()
        cluster.forget(victim)
        time.sleep(STEADY_AFTER_S)
        until = time.monotonic()
    after_processes = cluster.replica_processes()
    summary = {
        **request_outcome(traffic.samples, fault_at, until),
        "replica_restarts": len(set(after_processes) - set(before_processes)),
        "replicas_lost": len(set(before_processes) - set(after_processes)),
        "victim_replicas": len(victim_replicas),
        "pod_stop_s": round(stopped["s"], 1),
        "replacement_process_s": round(replacement_at - fault_at, 1) if replacement_at else None,
        "recovered_s": round(recovered_at - fault_at, 1) if recovered_at else None,
        **_probe_outcome(traffic, fault_at),
    }
    return Drill(summary, traffic.samples, traffic.health, traffic.readiness, fault_at, recovered_at)
