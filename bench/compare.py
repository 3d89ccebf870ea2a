"""Seed design vs our app, side by side on one machine, in one Ray session.

    .venv/bin/python bench/compare.py            # full run (~4-8 min on 2 cores)
    .venv/bin/python bench/compare.py --quick    # ~1-2 min, fewer requests

Both designs run in the same Ray session with the same model (the app's ``model_id``, ``embedded``
in the chart's local scenario), the same steps, guidance, size and prompt sequence, and the same
replicas and ``ray_actor_options``. Our app is deployed from the serveConfigV2 that the Helm chart
renders for its local CPU scenario (``helm_python``, no helm binary); when the chart cannot be rendered
the script falls back to equivalent built-in args and says so. Concurrency levels are measured with
a closed-loop client, alternating which design goes first at each level so that background load on
a shared machine drifts over both.

Writes ``bench/results/compare-<UTC time>.{json,md,png}`` and ``latest.*`` copies, prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import socket
import statistics
import sys
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import loadgen  # noqa: E402

#: The chart's CPU/local scenario; the first that exists is used.
LOCAL_SCENARIO_FILES = ("chart/ci/cpu-local-values.yaml", "chart/ci/local-values.yaml", "chart/ci/cpu-values.yaml")

#: Used only when the chart cannot be rendered; mirrors what the local scenario deploys.
FALLBACK_APPLICATION = {
    "name": "sdxl",
    "import_path": "app.main:build_app",
    "route_prefix": "/serve",
    "args": {
        "model_id": "embedded",
        "backend": "cpu",
        "image_sizes": ["128x128"],
        "default_steps": 20,
        "batch_size": 4,
        "warmup": True,
    },
    "deployments": [{"name": "SDXLService", "num_replicas": 1, "ray_actor_options": {"num_cpus": 1}}],
}

PROMPTS = (
    "an astronaut is dancing on green grass, sunlit",
    "a lighthouse on a cliff at dawn, oil painting",
    "a bowl of ramen, studio photo, shallow depth of field",
    "a red fox in fresh snow, telephoto",
    "isometric city block at night, neon signs",
    "a watercolor of a sailing boat in a storm",
    "macro shot of a dew drop on a leaf",
    "a cozy library with a fireplace, warm light",
)

#: Designs measured, in table order. "ours" is the chart's local scenario as rendered; the variant differs
#: only in batch_wait_timeout_s=0, to show what the batch wait costs an unloaded service.
DESIGNS = ("seed", "ours", "ours-nowait")
NOWAIT_ROUTE = "/serve-nowait"

GOAL_P50_RATIO = 0.85  # ours / seed at concurrency 1, at most
GOAL_THROUGHPUT_RATIO = 1.8  # ours / seed at concurrency 16, at least


# --------------------------------------------------------------------------------------------- config


def find_scenario_file(explicit: str | None) -> Path | None:
    if explicit:
        return REPO / explicit if not os.path.isabs(explicit) else Path(explicit)
    for name in LOCAL_SCENARIO_FILES:
        if (REPO / name).is_file():
            return REPO / name
    return None


def application_from_chart(values_file: Path) -> dict:
    """Render the chart with ``values_file`` and return our app's serveConfigV2 application entry."""
    import helm_python
    import yaml

    values = helm_python.values_from_yaml(values_file.read_text())
    with helm_python.Chart.load(str(REPO / "chart")) as chart:
        manifests = chart.render(values=values, name="sdxl", namespace="default", is_install=True)
    for template, text in manifests.items():
        if not template.endswith((".yaml", ".yml")):
            continue  # NOTES.txt and helpers are not manifests
        for doc in yaml.safe_load_all(text):
            if not doc or doc.get("kind") != "RayService":
                continue
            serve_config = doc["spec"]["serveConfigV2"]
            serve_config = yaml.safe_load(serve_config) if isinstance(serve_config, str) else serve_config
            for application in serve_config.get("applications", []):
                if application.get("import_path") == "app.main:build_app":
                    return application
    raise RuntimeError(f"no RayService application with import_path app.main:build_app in the chart rendered with {values_file}")


def resolve_application(values_arg: str | None) -> tuple[dict, str]:
    values_file = find_scenario_file(values_arg)
    if values_arg and not (values_file and values_file.is_file()):
        raise SystemExit(f"--values {values_arg}: no such file")
    if values_file and values_file.is_file() and (REPO / "chart" / "Chart.yaml").is_file():
        shown = values_file.relative_to(REPO) if values_file.is_relative_to(REPO) else values_file
        try:
            return application_from_chart(values_file), f"serveConfigV2 rendered from chart/ with {shown} (helm_python)"
        except Exception as error:
            if values_arg:  # asked for explicitly: measuring something else instead would mislead
                raise SystemExit(f"the chart does not render with {shown}: {type(error).__name__}: {error}")
            reason = f"chart render failed: {type(error).__name__}: {error}"
    else:
        reason = "chart or its local scenario values file not found"
    return json.loads(json.dumps(FALLBACK_APPLICATION)), f"built-in fallback args ({reason})"


def sdxl_deployment_options(application: dict) -> dict:
    for deployment in application.get("deployments", []) or []:
        if deployment.get("name") == "SDXLService":
            return deployment
    return {}


# -------------------------------------------------------------------------------------------- machine


def machine_facts() -> dict:
    import psutil

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("ray", "torch", "diffusers", "transformers", "PIL", "fastapi", "starlette", "httpx", "numpy"):
        try:
            versions[package] = __import__(package).__version__
        except Exception:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "versions": versions,
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------- in-process figures


class BarePipeline:
    """The pipeline alone, in this process, with the replica's thread count and the same call."""

    def __init__(self, args, threads: int):
        import torch

        from bench.pipelines import load_pipeline

        torch.set_num_threads(threads)
        self.threads = threads
        self.pipe = load_pipeline(args.model_id, args.backend)
        width, height = args.default_size
        self.call = {"num_inference_steps": args.default_steps, "guidance_scale": args.default_guidance_scale,
                     "width": width, "height": height}
        self.pipe(PROMPTS[0], **self.call)  # first call allocates; not counted

    def timed(self, prompts: list[str]) -> float:
        started = time.perf_counter()
        self.pipe(prompts if len(prompts) > 1 else prompts[0], **self.call)
        return time.perf_counter() - started

    def time_single(self, repeats: int) -> list[float]:
        return [self.timed([PROMPTS[i % len(PROMPTS)]]) for i in range(repeats)]


def bare_pipeline_figures(args, bare: BarePipeline, repeats: int) -> dict:
    threads, call, timed = bare.threads, bare.call, bare.timed
    batch = max(args.batch_size, 1)
    probe = batch if batch > 1 else 4  # with batching off, still show what a batch of 4 would give
    single, batched = [], []
    for i in range(repeats):  # interleaved, so background load hits both alike
        single.append(timed([PROMPTS[i % len(PROMPTS)]]))
        batched.append(timed([PROMPTS[(i + j) % len(PROMPTS)] for j in range(probe)]))
    t1 = statistics.median(single)
    tb = statistics.median(batched)
    return {
        "threads": threads,
        "call": call,
        "bare_p50_s": t1,
        "bare_min_s": min(single),
        "batching": {
            "batch_size_in_use": args.batch_size,
            "probe_batch": probe,
            "images_per_s_batch1": 1.0 / t1,
            "images_per_s_batch": probe / tb,
            "efficiency": (probe / tb) / (1.0 / t1),
            "batch_call_p50_s": tb,
        },
    }


def synthetic_1024() -> dict:
    """Two deterministic 1024x1024 RGB images: photo-like (smooth + fine grain) and pure noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:1024, 0:1024].astype(np.float32) / 1024.0
    channels = []
    for phase in (0.0, 2.1, 4.2):
        smooth = 0.5 + 0.25 * np.sin(6.0 * x + phase) * np.cos(4.0 * y - phase) + 0.2 * (x * y)
        channels.append(smooth)
    photo = np.stack(channels, axis=-1) * 255.0 + rng.normal(0.0, 4.0, (1024, 1024, 3))
    photo_img = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8), "RGB")
    noise_img = Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8), "RGB")
    return {"photo-like": photo_img, "noise (what the embedded model draws)": noise_img}


def encode_figures(args, repeats: int) -> list[dict]:
    from app.encoding import EncoderSettings, encode_image

    ours = EncoderSettings.from_args(args)
    seed = EncoderSettings(png_compress_level=6, jpeg_quality=args.jpeg_quality, webp_quality=args.webp_quality)
    variants = [
        ("png (seed: Pillow default level 6)", "png", seed),
        (f"png (ours: level {ours.png_compress_level})", "png", ours),
        (f"jpeg (q{ours.jpeg_quality})", "jpeg", ours),
        (f"webp (q{ours.webp_quality})", "webp", ours),
    ]
    rows = []
    for image_name, image in synthetic_1024().items():
        for label, fmt, settings in variants:
            times, size = [], 0
            for _ in range(repeats):
                started = time.perf_counter()
                size = len(encode_image(image, fmt, settings))
                times.append(time.perf_counter() - started)
            rows.append({"image": image_name, "encoding": label, "ms": 1000 * statistics.median(times), "bytes": size})
    return rows


# ------------------------------------------------------------------------------------------- services


def replica_memory() -> dict:
    """RSS of every live Serve replica of this session, by deployment (psutil on the worker's PID)."""
    from bench.replicas import replica_rss_mib

    return replica_rss_mib()


def wait_running(names: list[str], timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        applications = serve.status().applications
        states = {name: applications[name].status if name in applications else "MISSING" for name in names}
        failed = {n: applications[n].message for n, s in states.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")}
        if failed:
            raise RuntimeError(f"deploy failed: {failed}")
        if all(s == "RUNNING" for s in states.values()):
            return
        time.sleep(1.0)
    raise TimeoutError(f"applications not RUNNING after {timeout_s}s: {states}")


def make_requests(base: str, route: str, headers: dict):
    def factory(index: int):
        query = urllib.parse.urlencode({"prompt": PROMPTS[index % len(PROMPTS)]})
        return "GET", f"{base}{route}/imagine?{query}", {"headers": headers}

    return factory


# ---------------------------------------------------------------------------------------------- report


def fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _span(values: list[float]) -> str:
    return f"{min(values):.3f}..{max(values):.3f}" if values else "n/a"


def render_markdown(report: dict) -> str:
    lines = [
        f"# Seed design vs our app ({report['mode']} run, {report['utc']})",
        "",
        f"- Command: `{report['command']}`",
        f"- Machine: {report['machine']['cpu_model'] or 'unknown CPU'}, {report['machine']['logical_cpus']} logical CPUs, "
        f"{report['machine']['memory_gib']} GiB; {report['machine']['platform']}; Python {report['machine']['python']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["machine"]["versions"].items() if v),
        f"- Load average (1/5/15 min) at start {report['load_average']['start']}, at end {report['load_average']['end']}"
        " — anything well above 0 means other work shared the CPUs and the numbers are noisy.",
        f"- Our app: {report['our_config_source']}",
        f"- Workload (both designs): model `{report['workload']['model_id']}` ({report['workload']['backend']}), "
        f"{report['workload']['steps']} steps, guidance {report['workload']['guidance_scale']}, {report['workload']['size']}, "
        f"{len(PROMPTS)} prompts cycled; {report['workload']['replicas']} model replica(s) each with "
        f"`ray_actor_options` {json.dumps(report['workload']['ray_actor_options'])}; our batch_size {report['workload']['batch_size']}.",
        "",
        "## Latency and throughput (closed loop, HTTP through the Serve proxy)",
        "",
        "| concurrency | design | requests (200) | p50 s | p99 s | throughput img/s | batch (service) | other statuses |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for level in report["levels"]:
        for design in DESIGNS:
            r = report["results"][design][str(level)]
            other = {k: v for k, v in r["statuses"].items() if k != "200"}
            lines.append(
                f"| {level} | {design} | {r['ok']}/{r['requests']} | {fmt(r['p50_s'])} | {fmt(r['p99_s'])} | "
                f"{fmt(r['throughput_rps'], 2)} | {fmt(r.get('mean_batch_size'), 2)} | {json.dumps(other) if other else '-'} |"
            )
    g = report["goals"]
    lines += [
        "",
        "p99 is nearest-rank: with fewer than 100 requests at a level it is the slowest request. "
        "'batch (service)' is the mean X-Batch-Size our app reports: how many images shared the pipeline call "
        "that made each one (the seed design does not batch). "
        "`ours-nowait` is our app with the same args except `batch_wait_timeout_s: 0` (not the chart's scenario): "
        "ours never waits when a replica is idle and, while its pipeline is busy, lets a forming batch collect "
        "partners until the pipeline is expected to be free (at most the batch timeout); nowait never waits, "
        "which shows what that wait buys under load.",
        "",
        "## Goals on this machine",
        "",
        "Judged on the worse of the pooled ratio (all rounds' requests together) and the median of the "
        "round-by-round ratios, so one lucky round cannot meet a goal.",
        "",
        "| goal | target | pooled | median of rounds | rounds (min..max) | met |",
        "|---|---:|---:|---:|---:|---|",
        f"| p50 at concurrency 1, ours / seed | ≤ {GOAL_P50_RATIO} | {fmt(g['p50_ratio_c1'])} | "
        f"{fmt(g['p50_ratio_c1_median'])} | {_span(report['round_ratios']['ours']['p50_c1'])} | {'yes' if g['p50_met'] else 'NO'} |",
        f"| throughput at concurrency 16, ours / seed | ≥ {GOAL_THROUGHPUT_RATIO} | {fmt(g['throughput_ratio_c16'], 2)} | "
        f"{fmt(g['throughput_ratio_c16_median'], 2)} | {_span(report['round_ratios']['ours']['throughput_c16'])} | "
        f"{'yes' if g['throughput_met'] else 'NO'} |",
        "",
        f"For reference, `ours-nowait` / seed: p50 at 1 = {fmt(report['nowait_vs_seed']['p50_ratio_c1'])}, "
        f"throughput at 16 = {fmt(report['nowait_vs_seed']['throughput_ratio_c16'], 2)}. "
        "The same ratios round by round (each round measures all designs back to back): "
        + "; ".join(f"`{d}` p50@1 {r['p50_c1']}, throughput@16 {r['throughput_c16']}" for d, r in report["round_ratios"].items())
        + ".",
        "",
        "## Per-request overhead over a bare in-process pipeline call",
        "",
        f"Bare pipeline call in this process ({report['bare']['threads']} torch thread(s), same call, timed "
        f"in rotation with the concurrency-1 requests): p50 {fmt(report['bare']['bare_p50_s'])} s. The service's figures include "
        "HTTP, the Serve proxy and router, and PNG encoding; a negative overhead means background load moved between samples.",
        "",
        "| design | p50 at concurrency 1, s | overhead, s | overhead, % of bare |",
        "|---|---:|---:|---:|",
    ]
    for design in DESIGNS:
        o = report["overhead"][design]
        lines.append(f"| {design} | {fmt(o['p50_c1_s'])} | {fmt(o['overhead_s'])} | {fmt(o['overhead_pct'], 1)} |")
    b = report["bare"]["batching"]
    lines += [
        "",
        "## Batching efficiency (in-process pipeline calls)",
        "",
        "| batch | images/s | vs batch 1 |",
        "|---:|---:|---:|",
        f"| 1 | {fmt(b['images_per_s_batch1'], 2)} | 1.00 |",
        f"| {b['probe_batch']}{' (in use)' if b['batch_size_in_use'] == b['probe_batch'] else ' (probe; batching off)'} | "
        f"{fmt(b['images_per_s_batch'], 2)} | {fmt(b['efficiency'], 2)} |",
        "",
        "## Encoding one 1024×1024 image (app.encoding.encode_image, median)",
        "",
        "| image | encoding | ms | bytes |",
        "|---|---|---:|---:|",
    ]
    for row in report["encoding"]:
        lines.append(f"| {row['image']} | {row['encoding']} | {fmt(row['ms'], 1)} | {row['bytes']:,} |")
    lines += [
        "",
        "## Replica memory (RSS, MiB, after the run)",
        "",
        "| application:deployment | RSS per replica |",
        "|---|---|",
    ]
    for deployment, values in report["replica_rss_mib"].items():
        lines.append(f"| {deployment} | {', '.join(str(v) for v in values)} |")
    lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for design, colour in (("seed", "tab:gray"), ("ours", "tab:blue"), ("ours-nowait", "tab:green")):
        r = report["results"][design]
        left.plot(levels, [r[str(c)]["p50_s"] for c in levels], "o-", color=colour, label=f"{design} p50")
        left.plot(levels, [r[str(c)]["p99_s"] for c in levels], "o--", color=colour, alpha=0.6, label=f"{design} p99")
        right.plot(levels, [r[str(c)]["throughput_rps"] for c in levels], "o-", color=colour, label=design)
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(c) for c in levels])
        axis.set_xlabel("concurrent clients")
        axis.grid(alpha=0.3)
        axis.legend()
    left.set_ylabel("latency, s")
    right.set_ylabel("images / s")
    w = report["workload"]
    fig.suptitle(f"seed vs ours — {w['model_id']} model, {w['steps']} steps, {w['size']} ({report['mode']} run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per level (~1-2 minutes)")
    parser.add_argument("--values", help="chart values file of the local scenario (default: first of %s)" % ", ".join(LOCAL_SCENARIO_FILES))
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument("--rounds", type=int, help="repeat the whole ladder N times (default 1 quick, 3 full)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    options = parser.parse_args(argv)

    mode = "quick" if options.quick else "full"
    levels = [int(x) for x in options.levels.split(",")]
    rounds = options.rounds or (1 if options.quick else 3)
    per_level = {1: 12, 4: 24, 16: 48} if options.quick else {1: 30, 4: 60, 16: 128}
    out_dir = Path(options.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    from app.config import parse_app_args

    application, source = resolve_application(options.values)
    application = dict(application)
    application["name"] = application.get("name") or "sdxl"
    route = (application.get("route_prefix") or "/serve").rstrip("/")
    args = parse_app_args(application.get("args"))
    sdxl_options = sdxl_deployment_options(application)
    actor_options = dict(sdxl_options.get("ray_actor_options") or {"num_cpus": 1})
    replicas = sdxl_options.get("num_replicas", 1)
    if not isinstance(replicas, int):  # "auto" or autoscaling: pin both designs to the minimum
        replicas = (sdxl_options.get("autoscaling_config") or {}).get("min_replicas", 1) or 1
    threads = max(1, int(actor_options.get("num_cpus", 1) or 1))
    width, height = args.default_size
    print(f"our app: {source}", flush=True)

    headers = {}
    if args.api_key_env:
        # The local scenario may switch the API key on; the bench then sends it, as a client would.
        os.environ.setdefault(args.api_key_env, "bench-" + os.urandom(8).hex())
        headers["Authorization"] = f"Bearer {os.environ[args.api_key_env]}"

    report: dict = {
        "mode": mode,
        "utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([Path(sys.executable).name, *[a if a != __file__ else "bench/compare.py" for a in sys.argv]]),
        "machine": machine_facts(),
        "load_average": {"start": load_average()},
        "our_config_source": source,
        "our_application": application,
        "levels": levels,
        "rounds": rounds,
        "workload": {
            "model_id": args.model_id,
            "backend": args.backend,
            "steps": args.default_steps,
            "guidance_scale": args.default_guidance_scale,
            "size": f"{width}x{height}",
            "replicas": replicas,
            "ray_actor_options": actor_options,
            "batch_size": args.batch_size,
            "batch_wait_timeout_s": args.batch_wait_timeout_s,
        },
    }

    print("in-process: bare pipeline and batching ...", flush=True)
    bare = BarePipeline(args, threads)
    report["bare"] = bare_pipeline_figures(args, bare, repeats=6 if options.quick else 16)
    print("in-process: encoding 1024x1024 ...", flush=True)
    report["encoding"] = encode_figures(args, repeats=3 if options.quick else 7)

    import ray
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    # Workers (and the Serve controller, which imports both app builders) inherit this environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    needed_cpus = len(DESIGNS) * replicas * float(actor_options.get("num_cpus", 1) or 0)
    # Custom resources the scenario asks for (its replicas may request neuron_cores to model a node's
    # capacity): provide enough for both designs' replicas.
    custom = {name: len(DESIGNS) * replicas * float(amount) for name, amount in (actor_options.get("resources") or {}).items()}
    ray.init(address="local", num_cpus=max(os.cpu_count() or 2, math.ceil(needed_cpus)), resources=custom or None,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        seed_application = {
            "name": "seed",
            "import_path": "bench.seed_design:build_seed",
            "route_prefix": "/seed",
            "args": {"model_id": args.model_id, "backend": args.backend, "steps": args.default_steps,
                     "guidance_scale": args.default_guidance_scale, "width": width, "height": height},
            "deployments": [
                {"name": "SeedModel", "num_replicas": replicas, "ray_actor_options": actor_options},
                # Only the model replicas hold logical CPUs, as our app's single deployment does.
                {"name": "SeedIngress", "ray_actor_options": {"num_cpus": 0}},
            ],
        }
        ours = {k: v for k, v in application.items() if k not in ("host", "port")}
        nowait = json.loads(json.dumps(ours))
        nowait.update(name="ours-nowait", route_prefix=NOWAIT_ROUTE)
        nowait["args"] = {**nowait.get("args", {}), "batch_wait_timeout_s": 0.0}
        config = ServeDeploySchema(applications=[ours, seed_application, nowait])
        client = serve.context._get_global_client()
        print(f"deploying {len(DESIGNS)} designs ...", flush=True)
        started = time.monotonic()
        client.deploy_apps(config)
        wait_running([ours["name"], "seed", "ours-nowait"], timeout_s=600)
        report["deploy_s"] = round(time.monotonic() - started, 1)

        routes = {"seed": "/seed", "ours": route, "ours-nowait": NOWAIT_ROUTE}
        design_headers = {"seed": {}, "ours": headers, "ours-nowait": headers}
        bare_runs: list[float] = []
        samples: dict = {d: {str(c): [] for c in levels} for d in routes}
        walls: dict = {d: {str(c): 0.0 for c in levels} for d in routes}
        per_round: dict = {d: {str(c): [] for c in levels} for d in routes}
        for round_index in range(rounds):
            for position, level in enumerate(levels):
                order = DESIGNS if (position + round_index) % 2 == 0 else DESIGNS[::-1]
                count = per_level.get(level, 4 * level)
                if level == 1:
                    # Concurrency 1 is measured request by request in rotation (seed, ours, nowait, bare,
                    # seed, ...): one request in flight at a time, and every design sees the same
                    # background load, which on a shared machine drifts faster than a block of runs.
                    factories = {design: make_requests(base, routes[design], design_headers[design]) for design in order}
                    asyncio.run(loadgen.run_in_rotation(factories, rounds=2, timeout_s=300))  # warm-up
                    runs = asyncio.run(loadgen.run_in_rotation(
                        factories, rounds=count, timeout_s=300, between=lambda: bare_runs.extend(bare.time_single(1))))
                else:
                    runs = {}
                    for design in order:
                        factory = make_requests(base, routes[design], design_headers[design])
                        loadgen.run_sync(factory, concurrency=level, total_requests=level, timeout_s=300)  # warm-up
                        runs[design] = loadgen.run_sync(factory, concurrency=level, total_requests=count, timeout_s=300)
                for design in order:
                    run = runs[design]
                    samples[design][str(level)].extend(run.samples)
                    walls[design][str(level)] += run.wall_s
                    s = loadgen.summarise(run)
                    per_round[design][str(level)].append(s)
                    print(f"round {round_index + 1} c={level:<3} {design:<11} p50 {fmt(s['p50_s'])} s  p99 {fmt(s['p99_s'])} s  "
                          f"{fmt(s['throughput_rps'], 2)} img/s  statuses {s['statuses']}", flush=True)
        report["per_round"] = per_round
        report["results"] = {
            d: {c: loadgen.summarise(loadgen.RunResult(int(c), samples[d][c], walls[d][c])) for c in samples[d]} for d in routes
        }
        report["replica_rss_mib"] = replica_memory()
        report["bare"]["bare_p50_s"] = statistics.median(bare_runs) if bare_runs else report["bare"]["bare_p50_s"]
        report["bare"]["bare_samples"] = len(bare_runs)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()

    report["load_average"]["end"] = load_average()
    bare = report["bare"]["bare_p50_s"]
    report["overhead"] = {}
    for design in DESIGNS:
        p50 = report["results"][design]["1"]["p50_s"] if 1 in levels else math.nan
        report["overhead"][design] = {"p50_c1_s": p50, "overhead_s": p50 - bare, "overhead_pct": 100 * (p50 - bare) / bare}
    p50_ratio = report["results"]["ours"]["1"]["p50_s"] / report["results"]["seed"]["1"]["p50_s"] if 1 in levels else math.nan
    tp_ratio = report["results"]["ours"]["16"]["throughput_rps"] / report["results"]["seed"]["16"]["throughput_rps"] if 16 in levels else math.nan
    nowait = report["results"]["ours-nowait"]
    report["nowait_vs_seed"] = {
        "p50_ratio_c1": nowait["1"]["p50_s"] / report["results"]["seed"]["1"]["p50_s"] if 1 in levels else math.nan,
        "throughput_ratio_c16": nowait["16"]["throughput_rps"] / report["results"]["seed"]["16"]["throughput_rps"] if 16 in levels else math.nan,
    }
    def round_ratios(design: str, level: str, key: str) -> list[float]:
        ours_rounds, seed_rounds = report["per_round"][design].get(level, []), report["per_round"]["seed"].get(level, [])
        return [round(o[key] / s[key], 3) for o, s in zip(ours_rounds, seed_rounds) if s[key]]

    report["round_ratios"] = {
        design: {"p50_c1": round_ratios(design, "1", "p50_s"), "throughput_c16": round_ratios(design, "16", "throughput_rps")}
        for design in DESIGNS[1:]
    }
    p50_rounds = report["round_ratios"]["ours"]["p50_c1"]
    tp_rounds = report["round_ratios"]["ours"]["throughput_c16"]
    p50_median = statistics.median(p50_rounds) if p50_rounds else math.nan
    tp_median = statistics.median(tp_rounds) if tp_rounds else math.nan
    report["goals"] = {
        "p50_ratio_c1": p50_ratio,
        "p50_ratio_c1_median": p50_median,
        "p50_met": bool(max(p50_ratio, p50_median) <= GOAL_P50_RATIO),
        "throughput_ratio_c16": tp_ratio,
        "throughput_ratio_c16_median": tp_median,
        "throughput_met": bool(min(tp_ratio, tp_median) >= GOAL_THROUGHPUT_RATIO),
    }

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    markdown = render_markdown(report)
    paths = {ext: out_dir / f"compare-{stamp}.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(report, indent=2, default=str))
    paths["md"].write_text(markdown)
    plot(report, paths["png"])
    for ext, path in paths.items():
        shutil.copyfile(path, out_dir / f"latest.{ext}")
    print()
    print(markdown)
    print(f"wrote {', '.join(str(p.relative_to(REPO) if p.is_relative_to(REPO) else p) for p in paths.values())} (+ latest.*)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
