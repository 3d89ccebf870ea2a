"""Quick latency/throughput of the service on the embedded model (or any running service).

    .venv/bin/python bench/quick_latency.py                    # starts a local Serve (embedded model, cpu)
    .venv/bin/python bench/quick_latency.py --url http://127.0.0.1:8000/serve   # measure a running service

Prints a table and writes bench/results/quick_latency.json. Single-request latency is the median of
sequential requests; throughput is completed requests per second with --concurrency clients in flight.
Numbers from a shared 2-core machine are indicative only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT = "an astronaut is dancing on green grass, sunlit"


def timed_get(client: httpx.Client, params: dict) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.get("/imagine", params=params)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, int(response.headers["X-Generation-Time-Ms"])


def measure(url: str, sequential: int, concurrency: int, total: int, steps: int | None) -> dict:
    extra = {"steps": steps} if steps else {}
    with httpx.Client(base_url=url, timeout=300) as client:
        info = client.get("/info").json()
        for seed in range(2):  # warm the HTTP path and the pipeline
            timed_get(client, {"prompt": PROMPT, "seed": seed, **extra})
        singles = [timed_get(client, {"prompt": PROMPT, "seed": 1000 + i, **extra}) for i in range(sequential)]
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, timeout=300, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        loaded = list(
            pool.map(lambda i: timed_get(client, {"prompt": PROMPT, "seed": 5000 + i, **extra}), range(total))
        )
        wall = time.perf_counter() - started
    latencies = sorted(elapsed for elapsed, _ in loaded)
    return {
        "url": url,
        "backend": info["backend"],
        "model_id": info["model_id"],
        "size": info["default_size"],
        "steps": steps or info["request_schema"]["imagine"]["properties"]["steps"]["default"],
        "batch_size": info["batch_size"],
        "single_latency_ms_median": round(statistics.median(e for e, _ in singles) * 1000, 1),
        "single_generation_ms_median": statistics.median(g for _, g in singles),
        "concurrency": concurrency,
        "requests": total,
        "throughput_rps": round(total / wall, 2),
        "latency_ms_p50_under_load": round(latencies[len(latencies) // 2] * 1000, 1),
        "latency_ms_p95_under_load": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}".strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="base URL of a running service (default: start a local one)")
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4, help="app batch_size for the local service")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quick_latency.json")
    cli = parser.parse_args()

    if cli.url:
        context = contextlib.nullcontext(cli.url)
    else:
        from tests.support.serve_cluster import fast_embedded_args, local_serve

        args = fast_embedded_args(default_steps=cli.steps, batch_size=cli.batch_size, image_sizes=["128x96"])
        context = local_serve(args, deployment_options={"max_ongoing_requests": 32, "max_queued_requests": 128})
    with context as url:
        result = measure(str(url), cli.sequential, cli.concurrency, cli.requests, cli.steps)

    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    cli.out.parent.mkdir(parents=True, exist_ok=True)
    cli.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {cli.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
