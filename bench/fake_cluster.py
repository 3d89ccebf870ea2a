"""A Ray cluster with the real autoscaler and fake nodes on this machine, owned process by process.

``FakeCluster(config)`` writes ``config`` (see ``bench/autoscaler_view.fake_cluster_config``), starts
the head with ``ray start --head --port 6379 --autoscaling-config=...`` in a temp dir of its own,
and on exit ends exactly the processes it started (SIGTERM, then SIGKILL) by process id, including
the raylets of the fake nodes the autoscaler launched. It never runs ``ray stop`` (that would end
every Ray process on the machine, other people's tests included).

Which processes are ours: every one started with ``SDXL_FAKE_CLUSTER=<token>`` in its environment
(the head's processes get it from ``ray start``, the fake nodes from the autoscaler that forks
them, Ray workers from their raylet), or with the cluster's temp dir on its command line, and the
children of those. The token can be chosen by the caller (``token=``), so that whoever started
this process can also clean up after it (:func:`end_processes`).

Why port 6379: Ray's fake provider connects its nodes to the GCS there. So two fake clusters
cannot run at once on one machine; the constructor refuses when the port is taken.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from bench.fake_provider import GCS_PORT

REPO = Path(__file__).resolve().parents[1]
MARKER = "SDXL_FAKE_CLUSTER"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def marked_processes(token: str, temp_dir: str | None = None) -> list[psutil.Process]:
    """Live processes started for the cluster ``token`` (and their children); zombies are dead already."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            ours = proc.environ().get(MARKER) == token
            if not ours and temp_dir:
                ours = any(temp_dir in part for part in proc.cmdline())
            if ours:
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for proc in list(found.values()):
        try:
            for child in proc.children(recursive=True):
                if child.status() != psutil.STATUS_ZOMBIE:
                    found.setdefault(child.pid, child)
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def end_processes(processes: list[psutil.Process], grace_s: float = 5.0) -> dict:
    """SIGTERM these processes, SIGKILL whoever is left after ``grace_s``; report the counts."""
    alive = []
    for proc in processes:
        try:
            proc.send_signal(signal.SIGTERM)
            alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    _, still = psutil.wait_procs(alive, timeout=grace_s)
    for proc in still:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    _, unkillable = psutil.wait_procs(still, timeout=5)
    return {"terminated": len(alive) - len(still), "killed": len(still) - len(unkillable), "left": len(unkillable)}


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:80]}"
    except psutil.Error:
        return str(proc.pid)


class FakeCluster:
    def __init__(
        self, config: dict, *, env: dict[str, str] | None = None, token: str | None = None, keep_logs: bool = False
    ):
        if not port_is_free(GCS_PORT):
            raise RuntimeError(
                f"port {GCS_PORT} is taken: another fake cluster (or a redis) runs on this machine; "
                "run under `flock /work/notes/heavy.lock` or wait for it to end"
            )
        self.config = config
        self.token = token or uuid.uuid4().hex
        self.keep_logs = keep_logs
        # Short: Ray's Unix socket paths live under it and must stay below ~107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="sdxl-fc-", dir="/tmp")
        self.config_path = Path(self.temp_dir) / "autoscaling.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.env = {
            **os.environ,
            **(env or {}),
            MARKER: self.token,
            "RAY_FAKE_CLUSTER": "1",  # Ray's fake provider refuses to start without it
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # KubeRay's sidecar: 5 s (Ray's default)
            # The driver joins without a token; nothing here listens beyond this machine.
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            # The autoscaler imports bench.fake_provider, the replicas import app.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        }
        self.address = ""
        self.started_pids: dict[int, float] = {}

    @property
    def session_dir(self) -> Path:
        return Path(self.temp_dir) / "session_latest"

    def start(self, timeout_s: float = 120.0) -> str:
        import ray._private.services

        head = self.config["available_node_types"][self.config["head_node_type"]]["node_config"]["raylet"]
        ray_bin = str(Path(sys.executable).with_name("ray"))
        command = [
            ray_bin,
            "start",
            "--head",
            f"--port={GCS_PORT}",
            f"--temp-dir={self.temp_dir}",
            f"--autoscaling-config={self.config_path}",
            f"--num-cpus={head['num_cpus']}",
            f"--memory={head['memory']}",
            f"--object-store-memory={head['object_store_memory']}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--min-worker-port=0",
            "--max-worker-port=0",
            # Ports other Ray sessions on this machine may hold by default.
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
        ]
        completed = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        self.track()
        if completed.returncode != 0:
            raise RuntimeError(f"ray start failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
        self.address = f"{ray._private.services.get_node_ip_address()}:{GCS_PORT}"
        return self.address

    def track(self) -> int:
        """Remember every process of this cluster alive now; returns how many are alive."""
        processes = marked_processes(self.token, self.temp_dir)
        for proc in processes:
            try:
                self.started_pids.setdefault(proc.pid, proc.create_time())
            except psutil.Error:
                continue
        return len(processes)

    def autoscaler_log(self) -> str:
        logs = self.session_dir / "logs"
        return "\n".join(path.read_text(errors="replace") for path in sorted(logs.glob("monitor*")) if path.is_file())

    def stop(self) -> dict:
        """End every process of this cluster, by pid; the driver must have called ray.shutdown()."""
        self.track()
        result = end_processes(self._known_alive())
        result["started"] = len(self.started_pids)
        # A raylet may fork a worker between the listing and its SIGTERM: end those too, by pid.
        stragglers = []
        for _ in range(3):
            self.track()
            late = self._known_alive()
            if not late:
                break
            stragglers += [_describe(proc) for proc in late]
            end_processes(late)
        result["stragglers"] = stragglers
        result["started"] = len(self.started_pids)
        result["left_after"] = len(marked_processes(self.token, self.temp_dir))
        if not self.keep_logs:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return result

    def _known_alive(self) -> list[psutil.Process]:
        alive = []
        for pid, created in self.started_pids.items():
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)  # still the process we saw, not a recycled pid
            except psutil.NoSuchProcess:
                continue
        return alive

    def __enter__(self) -> FakeCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(predicate, timeout_s: float, interval_s: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)
