"""A multi-node Ray on one machine, built the way KubeRay builds the chart's RayCluster, for fault drills.

Each Ray node is a "pod": one ``ray start --block`` process (what KubeRay runs as the Ray container's
main process) in a session of its own, with its own temp directory (the pod's ``/tmp/ray``) and
everything it starts below it (GCS, raylet, dashboard, agents, the actors' worker processes). So a pod
can be lost the way a real one is: every one of its processes SIGKILLed at once (node or head loss), or
stopped the way the kubelet stops a container on pod deletion (SIGTERM to the main process, which runs
Ray's own SIGTERM handler, then SIGKILL after the grace period).

- The head pod advertises no CPUs and no ``neuron_cores`` (the chart's head: ``num-cpus: 0``); worker
  pods advertise what the rendered worker group advertises (its group-level ``resources`` and the
  container's CPU limit), so SDXL replicas land only on workers.
- The app is the chart's own serveConfigV2 (rendered with Helm's engine), PUT to the head's dashboard
  as KubeRay does. Changed for this shared machine only: the proxies bind 127.0.0.1 on free ports
  (each worker pod's proxy its own, via Serve's ``RAY_SERVE_WORKER_PROXY_HTTP_PORT``).
- GCS fault tolerance as KubeRay 1.7 wires it (``ray-operator/controllers/ray/common/pod.go``,
  ``configureRedisFT`` / ``configureEmbeddedFT``): ``redis`` gives the head ``RAY_REDIS_ADDRESS``,
  ``RAY_external_storage_namespace`` and ``--redis-password``; ``rocksdb`` gives it
  ``RAY_gcs_storage=rocksdb`` and ``RAY_gcs_storage_path`` (here a directory that outlives head pods, as
  the PVC does); with either, workers get ``RAY_gcs_rpc_server_reconnect_timeout_s=600``.
- What KubeRay and the kubelet do after a loss is modelled by two calls the scenarios make:
  :meth:`FaultCluster.kuberay_resubmit_if_empty` (the RayService controller PUTs serveConfigV2 again
  when the head reports no application, ``checkIfNeedSubmitServeApplications``) and
  :meth:`FaultCluster.restart_container` (a container whose main process exited is started again).

Every Ray node uses 127.0.0.2 (loopback; ``ray start`` would turn 127.0.0.1 into the machine's routable
address). Only processes started here are ever signalled, by process id; nothing calls ``ray stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[1]
RAY_BIN = Path(sys.executable).with_name("ray")
API_APP = "sdxl"
API_DEPLOYMENT = "SDXLService"
NODE_IP = "127.0.0.2"
#: KubeRay's value for workers when GCS fault tolerance is on (utils.DefaultWorkerRayGcsReconnectTimeoutS).
KUBERAY_WORKER_GCS_RECONNECT_TIMEOUT_S = 600
FAULT_TOLERANCE_BACKENDS = (None, "redis", "rocksdb")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.25):
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - keep polling; report the last error at the deadline
            last = error
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s}s (last error: {last!r})")
        time.sleep(interval_s)


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """``(status, body)``; status 0 when nothing answered in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def chart_facts(values: dict | None = None, scenario: str = "cpu-local") -> dict:
    """What the chart renders for ``values`` over a scenario (``bench.chart_render``: Helm's engine, offline).

    ``{"serve_config", "worker_resources", "worker_cpus", "head_num_cpus"}``: serveConfigV2 as the
    RayService carries it, the custom resources the worker group advertises (read by the Ray
    autoscaler's own parser of a KubeRay group spec), its CPU limit and the head's ``num-cpus``.
    """
    from ray.autoscaler._private.kuberay.autoscaling_config import _get_ray_resources_from_group_spec

    from bench import chart_render

    service = chart_render.render_rayservice(values, scenario=scenario)
    cluster = service["spec"]["rayClusterConfig"]
    (worker,) = cluster["workerGroupSpecs"]
    advertised = _get_ray_resources_from_group_spec(worker, is_head=False)
    return {
        "serve_config": chart_render.serve_config(service),
        "worker_resources": {
            key: value for key, value in advertised.items() if key not in ("CPU", "GPU", "TPU", "memory")
        },
        "worker_cpus": int(worker["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]),
        "head_num_cpus": int(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"]),
    }


def embedded_model_env() -> dict:
    """What the pods' environment provides on EKS (the model cache), here the shared embedded model."""
    from app.embedded_model import EMBEDDED_MODEL_VERSION, ensure_embedded_model

    model_dir = ensure_embedded_model(REPO_ROOT / ".cache" / f"embedded-model-v{EMBEDDED_MODEL_VERSION}")
    return {"SDXL_EMBEDDED_MODEL_DIR": str(model_dir), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ----------------------------------------------------------------------------------------------- pods


@dataclass
class Pod:
    """One Ray node: a ``ray start --block`` process and everything below it."""

    name: str
    args: list[str]
    env: dict
    logdir: Path
    agent_port: int  # the dashboard agent (KubeRay's probes call it)
    proxy_port: int | None = None  # the worker's Serve proxy; the head's is FaultCluster.head_proxy_port
    process: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.logdir / f"{self.name}.{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(
                [str(RAY_BIN), "start", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def processes(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> int:
        """Lose the pod: SIGKILL every one of its processes at once (no handler runs). Returns how many."""
        processes = self.processes()
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self._reap(processes)
        return len(processes)

    def terminate(self, grace_s: float) -> float:
        """Stop the pod as the kubelet does on deletion: SIGTERM to the main process, SIGKILL after ``grace_s``.

        Returns the seconds until the main process exited (``grace_s`` when it had to be killed).
        Whatever of the pod is still running then is SIGKILLed, as when the container ends.
        """
        began = time.monotonic()
        known = self.processes()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)
        took = time.monotonic() - began
        leftover = [proc for proc in {p.pid: p for p in known + self.processes()}.values() if proc.is_running()]
        for proc in leftover:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self._reap(leftover)
        return took

    def _reap(self, processes: list[psutil.Process], timeout_s: float = 15.0) -> None:
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        psutil.wait_procs(processes, timeout=timeout_s)

    def replica_pids(self, deployment: str = API_DEPLOYMENT) -> set[int]:
        found = set()
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                # Serve titles a replica's process "ray::ServeReplica:<app>:<deployment>[.<method>]".
                title = proc.cmdline()[0] if proc.cmdline() else ""
                if title.startswith("ray::ServeReplica:") and title.split(".")[0].endswith(f":{deployment}"):
                    found.add(proc.pid)
        return found

    def kuberay_worker_ready(self) -> bool:
        """KubeRay 1.7's readiness probe of a RayService worker (``initLivenessAndReadinessProbe``):
        the agent's ``/api/local_raylet_healthz`` and the Serve proxy's ``/-/healthz`` both say "success"."""
        raylet = http_get(f"http://127.0.0.1:{self.agent_port}/api/local_raylet_healthz")
        proxy = http_get(f"http://127.0.0.1:{self.proxy_port}/-/healthz")
        return all(status == 200 and b"success" in body for status, body in (raylet, proxy))


# -------------------------------------------------------------------------------------------- cluster


@dataclass
class FaultCluster:
    """A head pod and worker pods on this machine; see the module docstring.

    ``fault_tolerance``: None (the chart's default today), "redis" or "rocksdb".
    ``worker_gcs_reconnect_timeout_s``: the workers' ``RAY_gcs_rpc_server_reconnect_timeout_s``. None
    leaves Ray's default (60 s) without fault tolerance and uses KubeRay's 600 with it.
    """

    serve_config: dict
    worker_resources: dict
    worker_cpus: int
    workdir: Path
    fault_tolerance: str | None = None
    worker_gcs_reconnect_timeout_s: int | None = None
    app_env: dict = field(default_factory=dict)
    head_num_cpus: int = 0
    head: Pod | None = None
    workers: list[Pod] = field(default_factory=list)
    redis: RedisServer | None = None
    gcs_port: int = 0
    dashboard_port: int = 0
    head_proxy_port: int = 0
    storage_namespace: str = ""
    gone: list[Pod] = field(default_factory=list)  # worker pods whose node was lost or deleted
    _head_pods: int = 0

    @classmethod
    def of_chart(cls, values: dict, **kwargs) -> contextlib.AbstractContextManager[FaultCluster]:
        """:meth:`running` with the pods and the app the chart renders for ``values`` (cpu-local scenario),
        the model from the shared embedded copy."""
        facts = chart_facts(values)
        return cls.running(
            serve_config=facts["serve_config"],
            worker_resources=facts["worker_resources"],
            worker_cpus=facts["worker_cpus"],
            head_num_cpus=facts["head_num_cpus"],
            app_env=embedded_model_env(),
            **kwargs,
        )

    @classmethod
    @contextlib.contextmanager
    def running(cls, *, workers: int = 2, deploy: bool = True, **kwargs) -> Iterator[FaultCluster]:
        if kwargs.get("fault_tolerance") not in FAULT_TOLERANCE_BACKENDS:
            raise ValueError(f"fault_tolerance must be one of {FAULT_TOLERANCE_BACKENDS}")
        # Short: Ray's unix socket paths under it must fit in 107 bytes.
        cluster = cls(workdir=Path(tempfile.mkdtemp(prefix="rayft-", dir="/tmp")), **kwargs)
        try:
            cluster.start_head()
            for _ in range(workers):
                cluster.add_worker()
            cluster.wait_nodes(1 + workers)
            if deploy:
                cluster.deploy()
                cluster.wait_running()
            yield cluster
        finally:
            cluster.close()

    # -- pods

    def _env(self) -> dict:
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        env.update(
            {
                "PYTHONPATH": str(REPO_ROOT),
                "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0",
                # On this shared 2-core machine under load, a dashboard agent can take longer to start
                # than the raylet waits for it by default, and the raylet then aborts the node.
                "RAY_agent_register_timeout_ms": "90000",
            }
        )
        env.update(self.app_env)
        return env

    def _new_pod(self, name: str, args: list[str], env: dict, proxy_port: int | None = None) -> Pod:
        tmp = self.workdir / name  # the pod's own /tmp/ray
        tmp.mkdir()
        agent_port = free_port()
        args = [
            *args,
            f"--node-ip-address={NODE_IP}",
            f"--temp-dir={tmp}",
            "--object-store-memory=104857600",
            f"--dashboard-agent-listen-port={agent_port}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--min-worker-port=0",
            "--max-worker-port=0",
            "--disable-usage-stats",
            "--block",
        ]
        pod = Pod(name=name, args=args, env=env, logdir=self.workdir, agent_port=agent_port, proxy_port=proxy_port)
        pod.start()
        return pod

    def start_head(self) -> Pod:
        """Start the head pod; after a loss, a new head pod on the same Service address (GCS and dashboard ports)."""
        assert self.head is None or not self.head.alive(), "the head pod is still running"
        if self._head_pods == 0:
            self.gcs_port, self.dashboard_port, self.head_proxy_port = free_port(), free_port(), free_port()
            self.storage_namespace = secrets.token_hex(8)
            if self.fault_tolerance == "redis":
                self.redis = RedisServer.start(self.workdir / "redis")
        env = self._env()
        args = [
            "--head",
            f"--port={self.gcs_port}",
            f"--num-cpus={self.head_num_cpus}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
        ]
        if self.fault_tolerance == "redis":
            env["RAY_REDIS_ADDRESS"] = self.redis.address
            env["RAY_external_storage_namespace"] = self.storage_namespace
            args.append(f"--redis-password={self.redis.password}")
        elif self.fault_tolerance == "rocksdb":
            env["RAY_gcs_storage"] = "rocksdb"
            env["RAY_gcs_storage_path"] = str(self.workdir / "gcs-volume")
        self._head_pods += 1
        self.head = self._new_pod(f"head{self._head_pods}", args, env)
        return self.head

    def add_worker(self) -> Pod:
        env = self._env()
        timeout = self.worker_gcs_reconnect_timeout_s
        if timeout is None and self.fault_tolerance:
            timeout = KUBERAY_WORKER_GCS_RECONNECT_TIMEOUT_S
        if timeout is not None:
            env["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(timeout)
        proxy_port = free_port()
        env["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] = str(proxy_port)
        args = [
            f"--address={NODE_IP}:{self.gcs_port}",
            f"--num-cpus={self.worker_cpus}",
            f"--resources={json.dumps(self.worker_resources)}",
        ]
        pod = self._new_pod(f"worker{len(self.workers) + len(self.gone) + 1}", args, env, proxy_port=proxy_port)
        self.workers.append(pod)
        return pod

    def restart_container(self, pod: Pod) -> None:
        """The kubelet restarting a container whose main process exited: same pod, same ports, new processes."""
        assert not pod.alive()
        pod.kill()  # anything of the old container still running goes with it
        pod.start()

    def forget(self, pod: Pod) -> None:
        """A worker pod whose node is gone for good (lost, or deleted by a drain): never restarted."""
        self.workers.remove(pod)
        self.gone.append(pod)

    def close(self) -> None:
        for pod in [*self.workers, *self.gone, *([self.head] if self.head else [])]:
            with contextlib.suppress(Exception):
                pod.kill()
        if self.redis is not None:
            self.redis.stop()
        if not os.environ.get("FAULTS_KEEP_WORKDIR"):  # keep the logs when debugging a drill
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the head's REST API (what KubeRay talks to)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _request(self, method: str, path: str, body: dict | None = None, timeout_s: float = 10.0) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.dashboard + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            text = response.read()
        return json.loads(text) if text.strip() else {}

    def alive_nodes(self) -> list[dict]:
        reply = self._request("GET", "/api/v0/nodes?detail=1&limit=100")
        return [node for node in reply["data"]["result"]["result"] if node["state"] == "ALIVE"]

    def restart_exited_containers(self, pods: list[Pod] | None = None) -> list[str]:
        """The kubelet's part: start again every pod container whose main process exited. Returns their names."""
        restarted = []
        for pod in pods if pods is not None else [*([self.head] if self.head else []), *self.workers]:
            if pod.process is not None and not pod.alive():
                self.restart_container(pod)
                restarted.append(pod.name)
        return restarted

    def wait_nodes(self, count: int, timeout_s: float = 180.0) -> list[dict]:
        """Until ``count`` Ray nodes are alive; a pod whose ``ray start`` gave up meanwhile (a slow start on a
        busy machine) is restarted, as its container would be."""

        def alive():
            self.restart_exited_containers()
            nodes = self.alive_nodes()
            return len(nodes) == count and nodes

        return wait_for(alive, timeout_s, f"{count} Ray nodes were not alive", interval_s=0.5)

    def deployable_config(self) -> dict:
        """serveConfigV2 as rendered, with the proxies on loopback at this cluster's free ports."""
        config = json.loads(json.dumps(self.serve_config))
        config["http_options"]["host"] = "127.0.0.1"
        config["http_options"]["port"] = self.head_proxy_port
        return config

    def deploy(self, timeout_s: float = 120.0) -> None:
        """PUT serveConfigV2 to the dashboard, as KubeRay does (retrying while the dashboard starts)."""
        config = self.deployable_config()
        wait_for(
            lambda: self._request("PUT", "/api/serve/applications/", config, timeout_s=30) is not None,
            timeout_s,
            "the dashboard did not accept serveConfigV2",
            interval_s=1.0,
        )

    def serve_details(self) -> dict:
        return self._request("GET", "/api/serve/applications/")

    def kuberay_resubmit_if_empty(self) -> bool:
        """One RayService reconcile: when the head answers but reports no Serve application, PUT
        serveConfigV2 again (KubeRay 1.7 ``checkIfNeedSubmitServeApplications``). True if it did."""
        try:
            applications = self.serve_details().get("applications") or {}
        except (OSError, urllib.error.URLError, ValueError):
            return False  # head not ready yet: KubeRay waits
        if applications:
            return False
        self._request("PUT", "/api/serve/applications/", self.deployable_config(), timeout_s=30)
        return True

    def wanted_replicas(self) -> int:
        app = next(a for a in self.serve_config["applications"] if a["name"] == API_APP)
        return next(d for d in app["deployments"] if d["name"] == API_DEPLOYMENT).get("num_replicas", 1)

    def replicas(self) -> list[dict]:
        """The API's replicas as Serve's controller reports them (replica_id, actor_id, pid, node_id, state)."""
        app = (self.serve_details().get("applications") or {}).get(API_APP)
        return (app["deployments"].get(API_DEPLOYMENT) or {}).get("replicas", []) if app else []

    def serving(self) -> list[dict] | None:
        """The RUNNING replicas when the application is RUNNING with all of them, else None."""
        app = (self.serve_details().get("applications") or {}).get(API_APP)
        if not app:
            return None
        if app["status"] == "DEPLOY_FAILED":
            raise RuntimeError(f"deploy failed: {app.get('message')}")
        deployment = app["deployments"].get(API_DEPLOYMENT) or {"replicas": []}  # absent while the app deploys
        running = [r for r in deployment["replicas"] if r["state"] == "RUNNING"]
        return running if app["status"] == "RUNNING" and len(running) == self.wanted_replicas() else None

    def wait_running(self, timeout_s: float = 240.0) -> list[dict]:
        """Until the API application is RUNNING with every replica RUNNING (and its model loaded)."""
        return wait_for(
            self.serving, timeout_s, f"{API_APP} was not RUNNING with {self.wanted_replicas()} replicas", interval_s=0.5
        )

    # -- replicas as processes (independent of the controller, which a head loss takes away)

    def replica_processes(self) -> dict[int, tuple[str, float]]:
        """``{pid: (pod name, process start time)}`` of every live API replica process on the workers."""
        found = {}
        for pod in self.workers:
            for pid in pod.replica_pids():
                with contextlib.suppress(psutil.Error):
                    found[pid] = (pod.name, psutil.Process(pid).create_time())
        return found

    def api_url(self, pod: Pod) -> str:
        """Base URL of the API through a worker pod's Serve proxy (the chart's Serve Service excludes the head)."""
        return f"http://127.0.0.1:{pod.proxy_port}/serve"
