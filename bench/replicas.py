"""Finding the OS processes of Serve replicas in *this* Ray session (no dashboard needed).

Ray titles an actor's worker process ``ray::<ActorClass>`` (``ray::<ActorClass>.<method>`` while it runs one);
Serve's replica actor class is ``ServeReplica:<app>:<deployment>``. Several Ray clusters may run on one machine
(helpers run tests concurrently), so only descendants of this session's raylet are considered.
"""

from __future__ import annotations

import psutil


def _session_root() -> psutil.Process:
    import ray

    node = ray._private.worker._global_node  # the node this driver started or joined
    raylet = node.all_processes["raylet"][0].process
    return psutil.Process(raylet.pid)


def replica_processes(deployment: str | None = None, app: str | None = None) -> list[psutil.Process]:
    """Live replica worker processes, optionally of one deployment (and app)."""
    found = []
    for proc in _session_root().children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if not title.startswith("ray::ServeReplica:"):
            continue
        # While the actor runs a task the title gains ".<method>" (e.g. ".initialize_and_get_metadata").
        parts = title.split()[0][len("ray::ServeReplica:") :].split(".")[0].split(":")
        proc_app, proc_deployment = (parts[0], parts[-1]) if len(parts) >= 2 else ("", parts[0])
        if deployment and proc_deployment != deployment:
            continue
        if app and proc_app != app:
            continue
        found.append(proc)
    return found


def replica_rss_mib(deployment: str | None = None, app: str | None = None) -> dict[str, list[float]]:
    """RSS of each live replica in MiB, keyed ``"<app>:<deployment>"``."""
    result: dict[str, list[float]] = {}
    for proc in replica_processes(deployment, app):
        try:
            title = " ".join(proc.cmdline()).split()[0]
            rss = proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
        key = title[len("ray::ServeReplica:") :].split(".")[0]
        result.setdefault(key, []).append(round(rss, 1))
    return dict(sorted(result.items()))
