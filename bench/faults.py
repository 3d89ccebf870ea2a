"""Fault drills: lose Ray's head, a worker node, or drain a worker, under load; print a table, write JSON.

    .venv/bin/python bench/faults.py                       # all five scenarios (~8-10 min on 2 cores)
    .venv/bin/python bench/faults.py --only node_loss      # one scenario
    .venv/bin/python bench/faults.py --update-docs         # all, and make it the committed reference run

Each scenario gets a fresh multi-node Ray on this machine (bench/fault_cluster.py: a 0-CPU head pod and
worker pods that advertise ``neuron_cores``, each a ``ray start --block`` process tree) running the
chart's cpu-local serveConfigV2 (embedded random-weight model, web UI off, one replica per worker
node), with traffic through a worker pod's Serve proxy (bench/fault_scenarios.py):

- ``head_loss_redis`` / ``head_loss_rocksdb``: GCS fault tolerance as KubeRay wires it; the head pod is
  SIGKILLed (GCS, raylet, dashboard, Serve controller and proxy: every process) for ``--down-s``, then a
  new head pod starts on the same address and storage.
- ``head_loss_no_ft``: the same without fault tolerance (the chart's default today), Ray's default GCS
  reconnect timeout (60 s) on the workers.
- ``node_loss``: a worker pod holding a replica is SIGKILLed.
- ``graceful_drain``: a worker pod holding a replica is deleted the kubelet's way (SIGTERM, then
  SIGKILL after 30 s, Kubernetes' default grace period).

Writes ``bench/results/faults.json`` (an object keyed by scenario, plus ``_meta`` on the run) and prints a
Markdown table; ``--update-docs`` also writes it to docs/faults.json and its table into README.md and
docs/faults.md (tests/reliability/test_reliability_faults_docs.py checks they agree).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fault_cluster import FaultCluster  # noqa: E402
from bench.fault_scenarios import CHART_VALUES, DRILL_SIZE, head_loss, node_loss  # noqa: E402
from bench.redis_server import RedisMissing  # noqa: E402

SCENARIOS = ("head_loss_redis", "head_loss_rocksdb", "head_loss_no_ft", "node_loss", "graceful_drain")
#: Longer than a head container restart; shorter than Ray's default GCS reconnect timeout (60 s).
DEFAULT_DOWN_S = 20.0
TABLE_COLUMNS = ("requests", "failed", "hung", "downtime_s", "replica_restarts")
#: The committed reference run, and the documents that show its table between the markers.
REFERENCE = REPO / "docs" / "faults.json"
TABLE_DOCS = (REPO / "README.md", REPO / "docs" / "faults.md")
TABLE_BEGIN, TABLE_END = "<!-- BEGIN faults-table (bench/faults.py --update-docs) -->", "<!-- END faults-table -->"


def _storage_evidence(cluster: FaultCluster) -> dict:
    """What shows the GCS really kept its tables outside the head pod."""
    if cluster.fault_tolerance == "redis":
        return {"gcs_storage": "redis", "redis_keys": cluster.redis.key_count()}
    if cluster.fault_tolerance == "rocksdb":
        volume = cluster.workdir / "gcs-volume"
        files = [p for p in volume.rglob("*") if p.is_file()]
        return {
            "gcs_storage": "rocksdb",
            "storage_files": len(files),
            "storage_bytes": sum(p.stat().st_size for p in files),
            "storage_entries": sorted(str(p.relative_to(volume)) for p in volume.iterdir()),
        }
    return {"gcs_storage": "memory (head pod)"}


def run_scenario(name: str, *, down_s: float) -> dict:
    began = time.monotonic()
    if name.startswith("head_loss_"):
        backend = {"head_loss_redis": "redis", "head_loss_rocksdb": "rocksdb", "head_loss_no_ft": None}[name]
        with FaultCluster.of_chart(CHART_VALUES, fault_tolerance=backend, workers=2) as cluster:
            drill = head_loss(cluster, down_s=down_s)
            result = {**drill.summary, **_storage_evidence(cluster)}
    else:
        with FaultCluster.of_chart(CHART_VALUES, workers=3) as cluster:
            drill = node_loss(cluster, graceful=name == "graceful_drain")
            result = dict(drill.summary)
    result["scenario_wall_s"] = round(time.monotonic() - began, 1)
    return result


def markdown_table(results: dict) -> str:
    results = {name: result for name, result in results.items() if not name.startswith("_")}
    lines = [
        "| scenario | " + " | ".join(TABLE_COLUMNS) + " | recovered_s | notes |",
        "|---|" + "---|" * (len(TABLE_COLUMNS) + 2),
    ]
    for name, result in results.items():
        if not result.get("supported", True):
            dashes = " | ".join("—" for _ in TABLE_COLUMNS)
            lines.append(f"| {name} | {dashes} | — | unsupported: {result['reason']} |")
            continue
        notes = []
        if "controller_back_s" in result:
            notes.append(
                f"head down {result['head_down_s']} s; controller back {result['controller_back_s']} s "
                f"after the new head"
            )
        exits = [e["raylet_exit_s"] for e in result.get("worker_exits", []) if e["raylet_exit_s"] is not None]
        if exits:
            notes.append(f"every worker raylet exited ({', '.join(map(str, exits))} s after the loss)")
        if result.get("serveconfig_resubmits"):
            notes.append("serveConfigV2 re-submitted")
        if "victim_replicas" in result:
            notes.append(
                f"{result['in_flight_at_fault_failed']} of {result['in_flight_at_fault']} requests in flight "
                "at the fault failed"
            )
        if result.get("pod_stop_s"):
            notes.append(f"the pod's processes ended after {result['pod_stop_s']} s")
        cells = [str(result.get(column)) for column in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {result.get('recovered_s')} | {'; '.join(notes)} |")
    return "\n".join(lines)


def update_docs(document: dict) -> list[Path]:
    """Make ``document`` the committed reference run: docs/faults.json, and its table in the docs."""
    REFERENCE.write_text(json.dumps(document, indent=2) + "\n")
    table = markdown_table(document)
    for path in TABLE_DOCS:
        text = path.read_text()
        start, end = text.index(TABLE_BEGIN) + len(TABLE_BEGIN), text.index(TABLE_END)
        path.write_text(text[:start] + "\n" + table + "\n" + text[end:])
    return [REFERENCE, *TABLE_DOCS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SCENARIOS, action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--down-s", type=float, default=DEFAULT_DOWN_S, help="how long the head pod stays lost")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "faults.json")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help=f"also make this run the reference: {REFERENCE.relative_to(REPO)} and the tables in "
        + ", ".join(str(p.relative_to(REPO)) for p in TABLE_DOCS),
    )
    args = parser.parse_args(argv)

    results: dict = {}
    for name in args.only or SCENARIOS:
        print(f"--- {name}", flush=True)
        try:
            results[name] = run_scenario(name, down_s=args.down_s)
        except RedisMissing as error:
            results[name] = {"supported": False, "reason": str(error)}
        print(json.dumps(results[name], indent=1), flush=True)
    document = {
        **results,
        "_meta": {
            "command": " ".join(["bench/faults.py", *(argv if argv is not None else sys.argv[1:])]),
            "utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "ray": __import__("ray").__version__,
            "model": "embedded random-weight SDXL pipeline on CPU (draws noise), "
            f"{DRILL_SIZE[0]}x{DRILL_SIZE[1]}, 4 steps",
            "down_s": args.down_s,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(markdown_table(results))
    print(f"\nwrote {args.out}")
    if args.update_docs:
        if args.only:
            parser.error("--update-docs needs the full run (no --only)")
        print("updated " + ", ".join(str(p.relative_to(REPO)) for p in update_docs(document)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
