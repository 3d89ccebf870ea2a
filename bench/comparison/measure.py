"""Measuring: the machine, the bare pipeline and encoders in this process, then the three designs over
HTTP in one Ray session, concurrency level by level, alternating which design goes first."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import socket
import statistics
import time
import urllib.parse
from pathlib import Path

from bench import loadgen
from bench.comparison.config import DESIGNS, PROMPTS, REPO, Plan, Scenario
from bench.comparison.results import Bare, Batching, EncodeRow, Summary

# --------------------------------------------------------------------------------------------- machine


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
        except ImportError:
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
        self.call = {
            "num_inference_steps": args.default_steps,
            "guidance_scale": args.default_guidance_scale,
            "width": width,
            "height": height,
        }
        self.pipe(PROMPTS[0], **self.call)  # first call allocates; not counted

    def timed(self, prompts: list[str]) -> float:
        started = time.perf_counter()
        self.pipe(prompts if len(prompts) > 1 else prompts[0], **self.call)
        return time.perf_counter() - started

    def time_single(self, repeats: int) -> list[float]:
        return [self.timed([PROMPTS[i % len(PROMPTS)]]) for i in range(repeats)]

    def figures(self, batch_size: int, repeats: int) -> Bare:
        batch = max(batch_size, 1)
        probe = batch if batch > 1 else 4  # with batching off, still show what a batch of 4 would give
        single, batched = [], []
        for i in range(repeats):  # interleaved, so background load hits both alike
            single.append(self.timed([PROMPTS[i % len(PROMPTS)]]))
            batched.append(self.timed([PROMPTS[(i + j) % len(PROMPTS)] for j in range(probe)]))
        t1, tb = statistics.median(single), statistics.median(batched)
        batching = Batching(
            batch_size_in_use=batch_size,
            probe_batch=probe,
            images_per_s_batch1=1.0 / t1,
            images_per_s_batch=probe / tb,
            efficiency=(probe / tb) / (1.0 / t1),
            batch_call_p50_s=tb,
        )
        return Bare(threads=self.threads, call=self.call, bare_p50_s=t1, bare_min_s=min(single), batching=batching)


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


def encode_figures(args, repeats: int) -> list[EncodeRow]:
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
            rows.append(EncodeRow(image=image_name, encoding=label, ms=1000 * statistics.median(times), bytes=size))
    return rows


# ------------------------------------------------------------------------------------------- services


def wait_running(names: list[str], timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    states: dict = {}
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


class Measurements:
    """What the ladder of concurrency levels collected, per design and level."""

    def __init__(self, levels: tuple[int, ...]):
        self.samples: dict = {d: {str(c): [] for c in levels} for d in DESIGNS}
        self.walls: dict = {d: {str(c): 0.0 for c in levels} for d in DESIGNS}
        self.per_round: dict = {d: {str(c): [] for c in levels} for d in DESIGNS}
        self.bare_runs: list[float] = []
        self.deploy_s = math.nan
        self.replica_rss_mib: dict = {}

    def add(self, design: str, level: int, run: loadgen.RunResult) -> Summary:
        self.samples[design][str(level)].extend(run.samples)
        self.walls[design][str(level)] += run.wall_s
        summary = Summary.of(run)
        self.per_round[design][str(level)].append(summary)
        return summary

    def pooled(self) -> dict:
        return {
            d: {c: Summary.of(loadgen.RunResult(int(c), self.samples[d][c], self.walls[d][c])) for c in self.samples[d]}
            for d in DESIGNS
        }


def _fmt(value, digits=3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def measure_designs(scenario: Scenario, plan: Plan, bare: BarePipeline, headers: dict) -> Measurements:
    """Deploy the three designs in a private Ray session and run the concurrency ladder ``plan.rounds`` times."""
    import ray
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from bench.replicas import replica_rss_mib

    # Workers (and the Serve controller, which imports both app builders) inherit this environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(**scenario.ray_init_options(copies=len(DESIGNS)))
    measured = Measurements(plan.levels)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        applications = scenario.applications()
        print(f"deploying {len(DESIGNS)} designs ...", flush=True)
        started = time.monotonic()
        serve.context._get_global_client().deploy_apps(ServeDeploySchema(applications=applications))
        wait_running([application["name"] for application in applications], timeout_s=600)
        measured.deploy_s = round(time.monotonic() - started, 1)

        routes = scenario.routes()
        design_headers = {"seed": {}, "ours": headers, "ours-nowait": headers}
        for round_index in range(plan.rounds):
            for position, level in enumerate(plan.levels):
                order = DESIGNS if (position + round_index) % 2 == 0 else DESIGNS[::-1]
                count = plan.requests_at(level)
                if level == 1:
                    # Concurrency 1 is measured request by request in rotation (seed, ours, nowait, bare,
                    # seed, ...): one request in flight at a time, and every design sees the same
                    # background load, which on a shared machine drifts faster than a block of runs.
                    factories = {
                        design: make_requests(base, routes[design], design_headers[design]) for design in order
                    }
                    asyncio.run(loadgen.run_in_rotation(factories, rounds=2, timeout_s=300))  # warm-up
                    runs = asyncio.run(
                        loadgen.run_in_rotation(
                            factories,
                            rounds=count,
                            timeout_s=300,
                            between=lambda: measured.bare_runs.extend(bare.time_single(1)),
                        )
                    )
                else:
                    runs = {}
                    for design in order:
                        factory = make_requests(base, routes[design], design_headers[design])
                        loadgen.run_sync(factory, concurrency=level, total_requests=level, timeout_s=300)  # warm-up
                        runs[design] = loadgen.run_sync(factory, concurrency=level, total_requests=count, timeout_s=300)
                for design in order:
                    s = measured.add(design, level, runs[design])
                    print(
                        f"round {round_index + 1} c={level:<3} {design:<11} "
                        f"p50 {_fmt(s.p50_s)} s  p99 {_fmt(s.p99_s)} s  "
                        f"{_fmt(s.throughput_rps, 2)} img/s  statuses {s.statuses}",
                        flush=True,
                    )
        measured.replica_rss_mib = replica_rss_mib()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return measured
