"""Scale-out under load on Ray's real autoscaler: from one inf2-shaped node to several and back.

    .venv/bin/python bench/scale_out.py            # full run (~6-8 min on 2 cores)
    .venv/bin/python bench/scale_out.py --quick    # the suite's shorter version (~2-3 min)

Run under the shared lock on a shared machine (`flock /work/notes/heavy.lock ...`): the fake
cluster's GCS must listen on port 6379, so two runs cannot overlap.

1. The chart renders the autoscaling scenario (chart/ci/autoscaling-values.yaml) for inf2.xlarge
   workers (2 NeuronCores, 2 per replica: one replica per node, the chart's arithmetic) and the
   embedded CPU model; timers shortened for a bounded run (the table says which).
2. Ray's KubeRay translator turns the rendered rayClusterConfig into node types; Ray's autoscaler
   runs them against fake nodes on this machine (bench/fake_cluster.py, bench/fake_provider.py).
3. The chart's serveConfigV2 is deployed as KubeRay does (Serve's deploy API, from a driver on the
   cluster), with two changes only: the proxy listens on loopback at a free port, on the head
   only (all fake nodes share one IP, so one port per node cannot work here).
4. Closed-loop clients on loopback ramp up, hold, stop; a timeline is recorded every second.
5. Control: the same with the worker group in the public blueprint's shape (no neuron_cores for
   the autoscaler): it must never add a node while replicas wait.

Writes bench/results/scale_out.json (or --out), a Markdown report and a PNG next to it, and prints
the timeline table. docs/scale_out.md and docs/scale_out.png are copies of a full run's.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import autoscaler_view as view  # noqa: E402
from bench import chart_render, loadgen  # noqa: E402
from bench.fake_cluster import FakeCluster, free_port  # noqa: E402
from bench.scale_timeline import Observer  # noqa: E402

APP, DEPLOYMENT = "sdxl", "SDXLService"
INSTANCE = {"type": "inf2.xlarge", "neuron_cores": 2, "neuron_devices": 1}
MIN_NODES = 1


@dataclass(frozen=True)
class Profile:
    name: str
    max_nodes: int  # workers.maxNodes = autoscaling.maxReplicas (one replica per node)
    upscale_delay_s: float  # autoscaling.upscaleDelayS
    downscale_delay_s: float  # autoscaling.downscaleDelayS
    idle_timeout_s: int  # workers.idleTimeoutSeconds
    ramp: tuple[tuple[float, int], ...]  # (seconds, clients) before the peak
    peak_clients: int
    hold_after_peak_s: float  # keep the peak load this long once every replica runs
    hold_max_s: float  # ... or stop after this long at the peak regardless
    settle_max_s: float  # wait at most this long for the scale-in after the load stops
    control_wait_s: float  # control: keep the load on this long after a replica first waits for a node


PROFILES = {
    # Serve's upscale delay stays the chart default (30 s); the scale-in timers are shortened.
    "full": Profile("full", 3, 30, 30, 30, ((15, 4), (15, 12)), 40, 60, 300, 240, 90),
    "quick": Profile("quick", 2, 5, 5, 6, ((4, 4), (4, 12)), 40, 5, 100, 100, 20),
}

#: Clients wait longer than Serve's own limit (serve.requestTimeoutS below), so a hang shows as a give-up.
REQUEST_TIMEOUT_S = 60
CLIENT_TIMEOUT_S = 2 * REQUEST_TIMEOUT_S


def chart_values(profile: Profile) -> dict:
    """The autoscaling scenario, on inf2.xlarge-shaped workers, with the embedded model on CPU."""
    return chart_render.deep_merge(
        chart_render.scenario_values("autoscaling"),
        {
            "workers": {
                "instanceType": INSTANCE["type"],
                "minNodes": MIN_NODES,
                "maxNodes": profile.max_nodes,
                "idleTimeoutSeconds": profile.idle_timeout_s,
            },
            "neuronCoresPerReplica": 2,
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": profile.max_nodes,
                "upscaleDelayS": profile.upscale_delay_s,
                "downscaleDelayS": profile.downscale_delay_s,
            },
            # An inf2.xlarge worker has 2 vCPU and ~10 GiB for Ray (validate.yaml refuses the defaults there).
            "serve": {"replicaCpus": 1, "replicaMemoryMiB": 2048, "requestTimeoutS": REQUEST_TIMEOUT_S},
            "model": {"id": "embedded", "backend": "cpu", "imageSizes": ["64x64"], "download": False},
            "generation": {"defaultSteps": 4},
        },
    )


def local_serve_config(serve_config: dict, port: int) -> dict:
    """The chart's serveConfigV2 with the proxy on loopback, on the head only (see the docstring)."""
    config = copy.deepcopy(serve_config)
    config["http_options"] = {**config["http_options"], "host": "127.0.0.1", "port": port}
    config["proxy_location"] = "HeadOnly"
    return config


def deploy_like_kuberay(config: dict) -> None:
    """What the dashboard's PUT /api/serve/applications/ (KubeRay's call) does with serveConfigV2."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
        grpc_options=schema.grpc_options.model_dump(),
    )
    client.deploy_apps(schema)


def worker_env() -> dict[str, str]:
    from app.embedded_model import EMBEDDED_MODEL_VERSION, ensure_embedded_model

    model_dir = ensure_embedded_model(REPO / ".cache" / f"embedded-model-v{EMBEDDED_MODEL_VERSION}")
    return {"SDXL_EMBEDDED_MODEL_DIR": str(model_dir), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def requests_to(base: str):
    def factory(index: int):
        return "GET", f"{base}/serve/imagine", {"params": {"prompt": f"scale out {index}"}}

    return factory


class LoadThread:
    def __init__(self, load: loadgen.AdjustableLoad):
        self.load = load
        self.thread = threading.Thread(target=lambda: asyncio.run(load.run()), daemon=True)

    def __enter__(self) -> loadgen.AdjustableLoad:
        self.thread.start()
        return self.load

    def __exit__(self, *exc) -> None:
        self.load.stop()
        self.thread.join(timeout=CLIENT_TIMEOUT_S + 10)


def run_scenario(shape: str, profile: Profile, token: str | None, log=print) -> dict:
    """``shape``: "chart" (the chart's worker group) or "seed" (the blueprint's); returns the record."""
    import ray

    rayservice = chart_render.render_rayservice(chart_values(profile))
    cluster_spec = rayservice["spec"]["rayClusterConfig"]
    if shape == "seed":
        cluster_spec = view.seed_shaped(cluster_spec, INSTANCE["neuron_devices"])
    translated = view.kuberay_autoscaling_config(cluster_spec)
    (worker_type,) = [name for name in translated["available_node_types"] if name != view.KUBERAY_HEAD_TYPE]
    record = {
        "shape": shape,
        "node_type": translated["available_node_types"][worker_type],
        "idle_timeout_minutes": translated["idle_timeout_minutes"],
        "upscaling_speed": translated["upscaling_speed"],
    }
    port = free_port()
    config = local_serve_config(chart_render.serve_config(rayservice), port)
    record["autoscaling_config"] = config["applications"][0]["deployments"][0]["autoscaling_config"]
    observer = Observer(APP, DEPLOYMENT)
    load = loadgen.AdjustableLoad(
        requests_to(f"http://127.0.0.1:{port}"),
        max_clients=profile.peak_clients,
        timeout_s=CLIENT_TIMEOUT_S,
        backoff_on_503_s=1.0,
    )
    cluster = FakeCluster(view.fake_cluster_config(translated, INSTANCE["neuron_cores"]), env=worker_env(), token=token)
    try:
        cluster.start()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        # ray.init installs its own SIGTERM handler, which ends the process at once: put ours back so
        # that a SIGTERM unwinds through the finally below and ends the cluster's processes.
        signal.signal(signal.SIGTERM, _interrupt)
        deploy_like_kuberay(config)
        log(f"[{shape}] cluster up, serveConfigV2 submitted")
        with LoadThread(load):
            _drive(shape, profile, observer, load, cluster, log)
        record["load_finished"] = not load.in_flight
    finally:
        if ray.is_initialized():
            ray.shutdown()
        record["autoscaler_infeasible_lines"] = (
            sum("No available node types can fulfill" in line for line in cluster.autoscaler_log().splitlines())
            if Path(cluster.temp_dir).exists()
            else None
        )
        record["processes"] = cluster.stop()
    record["timeline"] = observer.rows
    record["replicas_that_served"] = observer.replicas_that_served()
    record["samples"] = [
        {
            "t0": round(s.started - observer.started, 2),
            "latency_s": round(s.latency, 3),
            "status": s.status,
            "retry_after": s.retry_after,
        }
        for s in load.samples
    ]
    return record


def _drive(shape: str, profile: Profile, observer: Observer, load, cluster: FakeCluster, log) -> None:
    """Deploy → ramp → hold → stop → settle, one observation a second."""

    def tick(phase: str) -> dict:
        row = observer.tick(phase, load)
        if int(row["t"]) % 5 == 0:
            cluster.track()
        log(_format_row(row))
        return row

    def every_second(until, phase: str, limit_s: float) -> dict:
        began = time.monotonic()
        while True:
            tick_started = time.monotonic()
            row = tick(phase)
            if until(row) or time.monotonic() - began > limit_s:
                return row
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick_started)))

    row = every_second(lambda r: r["replicas_running"] >= 1 and r["worker_nodes"] >= MIN_NODES, "deploy", 240)
    if row["replicas_running"] < 1:
        raise RuntimeError(f"the first replica never ran: {row}")
    every_second(lambda r: False, "idle", 2)
    # The control goes straight to the peak: how the load rises does not matter to a cluster that cannot grow.
    for seconds, clients in profile.ramp if shape == "chart" else ():
        load.set_clients(clients)
        every_second(lambda r: False, "ramp", seconds)
    load.set_clients(profile.peak_clients)
    if shape == "chart":
        peak_since: list[float] = []

        def held(r: dict) -> bool:
            if r["replicas_running"] >= profile.max_nodes and not peak_since:
                peak_since.append(time.monotonic())
            return bool(peak_since) and time.monotonic() - peak_since[0] >= profile.hold_after_peak_s

        every_second(held, "hold", profile.hold_max_s)
    else:
        waiting_since: list[float] = []

        def waited(r: dict) -> bool:
            if r["replicas_pending"] and not waiting_since:
                waiting_since.append(time.monotonic())
            return bool(waiting_since) and time.monotonic() - waiting_since[0] >= profile.control_wait_s

        every_second(waited, "hold", profile.control_wait_s + 60)
    load.stop()
    every_second(lambda r: r["in_flight"] == 0, "drain", CLIENT_TIMEOUT_S)
    if shape == "chart":
        every_second(
            lambda r: r["worker_nodes"] <= MIN_NODES and r["replicas_running"] <= 1 and not r["replicas_starting"],
            "settle",
            profile.settle_max_s,
        )


def _format_row(row: dict) -> str:
    answers = " ".join(f"{k}:{v}" for k, v in sorted(row["answers"].items())) or "-"
    p50 = f"{row['p50_s']:.2f}" if row["p50_s"] is not None else "-"
    return (
        f"{row['t']:6.1f} {row['phase']:<6} clients {row['clients']:>2} in-flight {row['in_flight']:>2} | "
        f"replicas {row['replicas_running']} run {row['replicas_starting']} start ({row['replicas_pending']} pending) "
        f"target {row['replicas_target']} (Serve metric {row['serve_metric']}) | "
        f"nodes {row['worker_nodes']} (+{row['nodes_launching']}) | "
        f"answers {answers} p50 {p50}s"
    )


def summarise(main: dict, control: dict | None, profile: Profile) -> dict:
    timeline = main["timeline"]
    load_rows = [r for r in timeline if r["phase"] in ("ramp", "hold", "drain")]
    after_load = [r for r in timeline if r["phase"] == "settle"]
    statuses: dict[str, int] = {}
    for sample in main["samples"]:
        statuses[str(sample["status"])] = statuses.get(str(sample["status"]), 0) + 1
    rejected = [s for s in main["samples"] if s["status"] == 503]
    hung = [s for s in main["samples"] if s["status"] == 0 or s["latency_s"] > REQUEST_TIMEOUT_S]
    first_load_t = load_rows[0]["t"] if load_rows else None

    def first_t(predicate, rows=load_rows + after_load):
        return next((r["t"] for r in rows if predicate(r)), None)

    at_peak = [r for r in timeline if r["phase"] == "hold" and r["clients"] == profile.peak_clients]
    by_replicas: dict[str, dict] = {}
    for count in sorted({r["replicas_running"] for r in at_peak}):
        rows = [r for r in at_peak if r["replicas_running"] == count]
        p50s = sorted(r["p50_s"] for r in rows if r["p50_s"] is not None)
        by_replicas[str(count)] = {
            "seconds": len(rows),
            "images_per_s": round(sum(r["ok"] for r in rows) / len(rows), 2),
            "rejected_per_s": round(sum(r["answers"].get("503", 0) for r in rows) / len(rows), 2),
            "median_of_p50_s": p50s[len(p50s) // 2] if p50s else None,
        }

    summary = {
        "profile": asdict(profile),
        "instance": INSTANCE,
        "node_type": main["node_type"],
        "serve_autoscaling_config": main["autoscaling_config"],
        "autoscaler": {
            "idle_timeout_minutes": main["idle_timeout_minutes"],
            "upscaling_speed": main["upscaling_speed"],
        },
        "nodes_min": min(r["worker_nodes"] for r in timeline),
        "nodes_start": next(r["worker_nodes"] for r in timeline if r["phase"] == "idle"),
        "nodes_max": max(r["worker_nodes"] for r in timeline),
        "nodes_end": timeline[-1]["worker_nodes"],
        "replicas_max": max(r["replicas_running"] for r in timeline),
        "replicas_end": timeline[-1]["replicas_running"],
        "status_counts": statuses,
        "rejected_without_retry_after": sum(1 for s in rejected if not (s["retry_after"] or "").isdigit()),
        "hung_clients": len(hung),
        "max_latency_s": max((s["latency_s"] for s in main["samples"]), default=None),
        "replicas_that_served": main["replicas_that_served"],
        "at_peak_by_replicas_running": by_replicas,
        "events_s": {
            "load_start": first_load_t,
            "replicas_target_above_1": first_t(lambda r: r["replicas_target"] > 1),
            "first_pending_replica": first_t(lambda r: r["replicas_pending"] > 0),
            "second_node_alive": first_t(lambda r: r["worker_nodes"] >= 2),
            "all_replicas_running": first_t(lambda r: r["replicas_running"] >= profile.max_nodes),
            "load_stop": first_t(lambda r: r["phase"] == "drain"),
            "replicas_back_to_min": first_t(lambda r: r["replicas_running"] <= 1, after_load),
            "nodes_back_to_min": first_t(lambda r: r["worker_nodes"] <= MIN_NODES, after_load),
        },
        "processes": main["processes"],
        "timeline": timeline,
    }
    if control is not None:
        ctimeline = control["timeline"]
        pending_t = [r["t"] for r in ctimeline if r["replicas_pending"] > 0 and r["phase"] in ("hold", "drain")]
        summary.update(
            {
                "control_node_type": control["node_type"],
                "control_nodes_max": max(r["worker_nodes"] for r in ctimeline),
                "control_nodes_launching_max": max(r["nodes_launching"] for r in ctimeline),
                "control_replicas_running_max": max(r["replicas_running"] for r in ctimeline),
                "control_replicas_pending_max": max(r["replicas_pending"] for r in ctimeline),
                "control_waited_s": round(pending_t[-1] - pending_t[0], 1) if pending_t else 0.0,
                "control_pending_at_end_of_load": next(
                    (r["replicas_pending"] for r in reversed(ctimeline) if r["phase"] == "hold"), 0
                ),
                "control_autoscaler_infeasible_lines": control["autoscaler_infeasible_lines"],
                "control_status_counts": _status_counts(control["samples"]),
                "control_processes": control["processes"],
                "control_timeline": ctimeline,
            }
        )
    return summary


def _status_counts(samples: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for sample in samples:
        counts[str(sample["status"])] = counts.get(str(sample["status"]), 0) + 1
    return counts


def table(summary: dict, every_s: float = 5.0) -> str:
    """The timeline in windows of ``every_s``: the state at the end of each, answers averaged over it."""
    lines = [
        "| t (s) | phase | clients | in flight | Serve metric | target | running | starting (pending) | "
        "worker nodes | answers/s by status | p50 (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    windows: list[list[dict]] = []
    for row in summary["timeline"]:
        if not windows or row["t"] >= windows[-1][0]["t"] + every_s:
            windows.append([])
        windows[-1].append(row)
    for window in windows:
        last = window[-1]
        answers: dict[str, int] = {}
        for row in window:
            for status, count in row["answers"].items():
                answers[status] = answers.get(status, 0) + count
        rate = " ".join(f"{k}: {v / len(window):.1f}" for k, v in sorted(answers.items())) or "-"
        p50s = sorted(row["p50_s"] for row in window if row["p50_s"] is not None)
        p50 = f"{p50s[len(p50s) // 2]:.2f}" if p50s else "-"
        metric = last["serve_metric"] if last["serve_metric"] is not None else "-"
        lines.append(
            f"| {last['t']:.0f} | {last['phase']} | {last['clients']} | {last['in_flight']} | {metric} | "
            f"{last['replicas_target']} | {last['replicas_running']} | "
            f"{last['replicas_starting']} ({last['replicas_pending']}) | "
            f"{last['worker_nodes']} | {rate} | {p50} |"
        )
    return "\n".join(lines)


def markdown(summary: dict) -> str:
    """The run as a short report: settings, events, counts, the 5-second timeline table."""
    profile, events = summary["profile"], summary["events_s"]
    node = summary["node_type"]["resources"]
    lines = [
        f"# Scale-out run ({profile['name']} profile): `{summary['command']}`",
        "",
        f"Fake `{summary['instance']['type']}`-shaped worker nodes as Ray's KubeRay translator derives them from the "
        f"chart (CPU {node['CPU']}, memory {node['memory'] / 2**30:.1f} GiB, neuron_cores {node.get('neuron_cores')}), "
        f"min/max workers {summary['node_type']['min_workers']}/{summary['node_type']['max_workers']}, "
        f"idle timeout {summary['autoscaler']['idle_timeout_minutes'] * 60:.0f} s, upscaling speed "
        f"{summary['autoscaler']['upscaling_speed']}; "
        f"Serve autoscaling_config `{json.dumps(summary['serve_autoscaling_config'])}`; "
        f"embedded model on CPU ({summary['machine']}). Wall time {summary['wall_s']:.0f} s.",
        "",
        "| event | seconds after the cluster started |",
        "|---|---:|",
    ]
    lines += [f"| {key.replace('_', ' ')} | {value if value is not None else '-'} |" for key, value in events.items()]
    lines += [
        "",
        f"Worker nodes: {summary['nodes_start']} at the start, {summary['nodes_max']} at most, "
        f"{summary['nodes_end']} at the end. "
        f"Replicas running: at most {summary['replicas_max']}, {summary['replicas_end']} at the end. "
        f"Answers by status: `{json.dumps(summary['status_counts'])}` (503s without Retry-After: "
        f"{summary['rejected_without_retry_after']}); clients that got no answer or waited past the request timeout: "
        f"{summary['hung_clients']}; slowest answer {summary['max_latency_s']} s.",
        "",
        "At the peak load, by replicas running: "
        + "; ".join(
            f"{count}: {v['images_per_s']} images/s, {v['rejected_per_s']} 503/s, "
            f"p50 {v['median_of_p50_s']} s ({v['seconds']} s)"
            for count, v in summary["at_peak_by_replicas_running"].items()
        )
        + ".",
        "",
        "Replicas that took traffic (CPU seconds after they became RUNNING): "
        + ", ".join(f"node …{r['node']} {r['busy_cpu_s']} s" for r in summary["replicas_that_served"])
        + ".",
    ]
    if "control_nodes_max" in summary:
        control_resources = json.dumps(summary["control_node_type"]["resources"])
        lines += [
            "",
            f"Control (the blueprint's worker group: node type resources `{control_resources}`): "
            f"worker nodes at most {summary['control_nodes_max']}, "
            f"nodes launching at most {summary['control_nodes_launching_max']}, "
            f"replicas waiting for a node at most {summary['control_replicas_pending_max']} "
            f"for {summary['control_waited_s']} s "
            f"({summary['control_pending_at_end_of_load']} still waiting when the load stopped); the autoscaler logged "
            f'"No available node types can fulfill" {summary["control_autoscaler_infeasible_lines"]} time(s).',
        ]
    lines += ["", "Timeline (5-second rows; answers per second averaged over the row):", "", table(summary)]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["timeline"]
    t = [r["t"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.step(t, [r["replicas_running"] for r in rows], where="post", label="replicas running", lw=2)
    top.step(
        t, [r["replicas_pending"] for r in rows], where="post", label="replicas waiting for a node", lw=1.5, ls="--"
    )
    top.step(t, [r["worker_nodes"] for r in rows], where="post", label="inf2.xlarge-shaped worker nodes", lw=2)
    top.step(t, [r["replicas_target"] for r in rows], where="post", label="Serve's target replicas", lw=1, ls=":")
    top.set_ylabel("count")
    top.set_ylim(0, summary["profile"]["max_nodes"] + 1.5)
    top.legend(loc="upper right", fontsize=8)
    window = 5
    ok = [r["ok"] for r in rows]
    smoothed = [sum(ok[max(0, i - window + 1) : i + 1]) / min(window, i + 1) for i in range(len(ok))]
    bottom.plot(t, smoothed, label="images/s (200s, 5 s mean)", color="tab:green")
    rejected = [r["answers"].get("503", 0) for r in rows]
    bottom.bar(t, rejected, width=1.0, color="tab:red", alpha=0.4, label="503 + Retry-After per second")
    bottom.set_ylabel("per second")
    bottom.set_xlabel("seconds since the cluster started")
    bottom.legend(loc="upper right", fontsize=8)
    for axis in (top, bottom):
        for key, label in (("load_start", "load on"), ("load_stop", "load off")):
            at = summary["events_s"].get(key)
            if at is not None:
                axis.axvline(at, color="grey", lw=0.8)
                if axis is top:
                    axis.text(at, summary["profile"]["max_nodes"] + 1.2, label, fontsize=8, ha="left", va="top")
    profile = summary["profile"]
    fig.suptitle(
        f"Ray autoscaler + Serve, fake inf2.xlarge nodes (upscale delay {profile['upscale_delay_s']:g} s, "
        f"downscale {profile['downscale_delay_s']:g} s, idle timeout {profile['idle_timeout_s']} s)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def ray_version() -> str:
    import ray

    return ray.__version__


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the suite's shorter profile")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale_out.json")
    parser.add_argument("--no-control", action="store_true", help="skip the seed-shaped control run")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no per-second lines while running")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    # Ray's token auth is off in the clusters this script starts (loopback only): the driver joins without one.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # A SIGTERM (e.g. from a test's timeout) unwinds through the cleanup that ends the cluster's processes.
    signal.signal(signal.SIGTERM, _interrupt)
    token = os.environ.get("SDXL_FAKE_CLUSTER_TOKEN")
    log = (lambda *_: None) if args.quiet else (lambda line: print(line, flush=True))
    started = time.monotonic()
    main_run = run_scenario("chart", profile, token, log)
    control = None if args.no_control else run_scenario("seed", profile, token, log)
    summary = summarise(main_run, control, profile)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    summary["command"] = "bench/scale_out.py" + (" --quick" if args.quick else "")
    summary["machine"] = f"{os.cpu_count()} CPUs, {platform.machine()}, Ray {ray_version()}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    args.out.with_suffix(".md").write_text(markdown(summary))
    if not args.no_plot:
        plot(summary, args.out.with_suffix(".png"))
    print(table(summary))
    keys = (
        "nodes_start",
        "nodes_max",
        "nodes_end",
        "replicas_max",
        "status_counts",
        "hung_clients",
        "control_nodes_max",
        "control_waited_s",
        "events_s",
        "wall_s",
    )
    print(json.dumps({key: summary.get(key) for key in keys}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
