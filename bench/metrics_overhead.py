"""What the SDXL metrics cost: throughput at 16 concurrent clients with metrics on and off, in one run.

    .venv/bin/python bench/metrics_overhead.py            # 6 rounds x 160 requests per side (~4-6 min on 2 cores)
    .venv/bin/python bench/metrics_overhead.py --quick    # 2 rounds x 64 requests (~1-2 min)

One Ray session (with Ray's metrics export on, as on the cluster) serves the chart's local scenario
(chart/ci/cpu-local-values.yaml, rendered through helm_python) twice, side by side: ``metrics-on`` as the
chart deploys it, and ``metrics-off``, the same application with ``metrics: false`` (AppArgs.metrics; the
access log is written by both). Each round measures both with a closed-loop client at concurrency 16,
alternating which goes first, so background load on a shared machine drifts over both. At the end the
run reads Ray's /metrics to check that the ``on`` side really recorded every image and the ``off`` side
none. Throughput on a shared 2-core machine moves by more than the metrics could cost, so the run also
times the recording itself: a replica-like Ray actor runs what one request, its pipeline call and its encode
record, with metrics on and off, and reports the difference per request. Prints Markdown tables; writes
them with JSON to bench/results/metrics-overhead-<UTC time>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import loadgen  # noqa: E402
from bench.comparison.config import LOCAL_SCENARIO, Scenario  # noqa: E402
from bench.comparison.measure import free_port, load_average, machine_facts, make_requests, wait_running  # noqa: E402

CONCURRENCY = 16
DESIGNS = {"metrics-on": "/serve", "metrics-off": "/serve-nometrics"}


def applications(scenario: Scenario) -> list[dict]:
    on = {key: value for key, value in scenario.application.items() if key not in ("host", "port")}
    on.update(name="metrics-on", route_prefix=DESIGNS["metrics-on"])
    off = json.loads(json.dumps(on))
    off.update(name="metrics-off", route_prefix=DESIGNS["metrics-off"])
    off["args"] = {**off.get("args", {}), "metrics": False}
    return [on, off]


def images_recorded(metrics_port: int) -> dict[str, float]:
    """ray_sdxl_images_total summed per Serve application, from Ray's Prometheus endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ray_sdxl_images_total{"):
            labels, value = line.rsplit(" ", 1)
            application = labels.split('application="', 1)[1].split('"', 1)[0]
            counts[application] = counts.get(application, 0.0) + float(value)
    return counts


def recording_cost_us(repeats: int = 20000) -> dict:
    """Microseconds of CPU per request spent recording, metrics on minus off, in a Ray actor (Ray's metric
    objects record through the worker's core)."""
    import ray

    @ray.remote(num_cpus=0)
    class Recorder:
        def run(self, enabled: bool, repeats: int) -> float:
            from app.http import ROUTES
            from app.jobs import ImageJob
            from app.metrics import ReplicaMetrics
            from app.service import GeneratedImage

            logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the access log is the same either way
            metrics = ReplicaMetrics(enabled=enabled, log_prompts=False, routes=ROUTES)
            jobs = (ImageJob("p", None, 1, 30, 5.0, 1024, 1024),)
            results = [GeneratedImage(None, 2000, 1, 10)]
            started = time.process_time()
            for _ in range(repeats):
                with metrics.request("/imagine") as record:
                    metrics.pipeline_call(jobs=jobs, answered=1, seconds=2.0, waits_ms=[10], succeeded=True)
                    metrics.encoded("png", 0.05)
                    record.generated(jobs, "png", results)
            return (time.process_time() - started) / repeats * 1e6

    recorder = Recorder.remote()
    ray.get(recorder.run.remote(True, 1000))  # warm up
    on = min(ray.get(recorder.run.remote(True, repeats)) for _ in range(3))
    off = min(ray.get(recorder.run.remote(False, repeats)) for _ in range(3))
    return {"on_us": on, "off_us": off, "cost_us": on - off, "repeats": repeats}


def measure(scenario: Scenario, rounds: int, requests: int) -> dict:
    import ray
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    metrics_port = free_port()
    # Two copies: metrics on and metrics off, side by side.
    ray.init(**scenario.ray_init_options(copies=2), _metrics_export_port=metrics_port)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runs: dict[str, list[dict]] = {design: [] for design in DESIGNS}
    sent = {design: 0 for design in DESIGNS}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        apps = applications(scenario)
        serve.context._get_global_client().deploy_apps(ServeDeploySchema(applications=apps))
        wait_running([app["name"] for app in apps], timeout_s=600)
        for round_index in range(rounds):
            order = list(DESIGNS) if round_index % 2 == 0 else list(DESIGNS)[::-1]
            for design in order:
                factory = make_requests(base, DESIGNS[design], {})
                warm = loadgen.run_sync(factory, concurrency=CONCURRENCY, total_requests=CONCURRENCY, timeout_s=300)
                run = loadgen.run_sync(factory, concurrency=CONCURRENCY, total_requests=requests, timeout_s=300)
                sent[design] += sum(s.status == 200 for s in warm.samples + run.samples)
                summary = loadgen.summarise(run)
                runs[design].append(summary)
                print(
                    f"round {round_index + 1} {design:<11} {summary['throughput_rps']:.2f} img/s  "
                    f"p50 {summary['p50_s']:.3f} s  statuses {summary['statuses']}",
                    flush=True,
                )
        cost = recording_cost_us()
        # Ray reports every 10 s by default: wait until the "on" side's count is complete.
        deadline = time.monotonic() + 60
        recorded = images_recorded(metrics_port)
        while recorded.get("metrics-on", 0) < sent["metrics-on"] and time.monotonic() < deadline:
            time.sleep(2)
            recorded = images_recorded(metrics_port)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return {"runs": runs, "sent_ok": sent, "recorded_images": recorded, "recording": cost}


def report(result: dict, meta: dict) -> str:
    on, off = result["runs"]["metrics-on"], result["runs"]["metrics-off"]
    ratios = [a["throughput_rps"] / b["throughput_rps"] for a, b in zip(on, off, strict=True)]
    pooled_on = statistics.fmean(r["throughput_rps"] for r in on)
    pooled_off = statistics.fmean(r["throughput_rps"] for r in off)
    lines = [
        f"### Metrics on vs off ({meta['mode']} run, {meta['utc']})",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']['cpu_model']}, {meta['machine']['logical_cpus']} logical CPUs; "
        f"load average at start {meta['load_start']}, at end {meta['load_end']}",
        f"- Workload: {meta['source']}; concurrency {CONCURRENCY}, {meta['requests']} requests per side per round "
        f"(after {CONCURRENCY} warm-up requests), {meta['rounds']} rounds, order alternating",
        "",
        "| round | metrics on img/s | metrics off img/s | on / off | p50 on s | p50 off s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for index, (a, b, ratio) in enumerate(zip(on, off, ratios, strict=True), start=1):
        lines.append(
            f"| {index} | {a['throughput_rps']:.2f} | {b['throughput_rps']:.2f} | {ratio:.3f} | "
            f"{a['p50_s']:.3f} | {b['p50_s']:.3f} |"
        )
    lines += [
        f"| mean | {pooled_on:.2f} | {pooled_off:.2f} | {pooled_on / pooled_off:.3f} | | |",
        "",
        f"Median of the round ratios: **{statistics.median(ratios):.3f}** "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}). "
        f"Images the `on` side answered: {result['sent_ok']['metrics-on']}; its ray_sdxl_images_total: "
        f"{result['recorded_images'].get('metrics-on', 0):.0f}; the `off` side's: "
        f"{result['recorded_images'].get('metrics-off', 0):.0f}.",
        "",
        "| recording one request (request, its pipeline call, its encode) | CPU µs |",
        "|---|---:|",
        f"| metrics on | {result['recording']['on_us']:.1f} |",
        f"| metrics off (access-log record only) | {result['recording']['off_us']:.1f} |",
        f"| **cost of the metrics** | **{result['recording']['cost_us']:.1f}** |",
        "",
        f"Best of 3 runs of {result['recording']['repeats']} requests in a Ray actor (time.process_time).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/metrics_overhead.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds x 64 requests (~1-2 minutes)")
    parser.add_argument("--rounds", type=int, help="rounds (default 6, quick 2)")
    parser.add_argument("--requests", type=int, help="requests per side per round (default 160, quick 64)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="also make this run the committed one: docs/bench/metrics_overhead.{json,md} and its copy in "
        "docs/performance.md",
    )
    options = parser.parse_args(argv)
    if options.update_docs and options.quick:
        parser.error("--update-docs publishes only a full run (no --quick)")
    if options.update_docs:
        from bench import docs_copy

        docs_copy.require_markers(REPO / "docs" / "performance.md", "metrics_overhead")
    rounds = options.rounds or (2 if options.quick else 6)
    requests = options.requests or (64 if options.quick else 160)
    scenario = Scenario.from_values(str(LOCAL_SCENARIO))
    meta = {
        "mode": "quick" if options.quick else "full",
        "rounds": rounds,
        "requests": requests,
        "utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python", "bench/metrics_overhead.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_facts(),
        "load_start": load_average(),
        "source": scenario.source,
    }
    print(f"deploying {scenario.source} twice (metrics on, metrics off) ...", flush=True)
    result = measure(scenario, rounds, requests)
    meta["load_end"] = load_average()
    markdown = report(result, meta)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"metrics-overhead-{meta['utc'].replace(':', '')}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, **result}, indent=2))
    stem.with_suffix(".md").write_text(markdown + "\n")
    print()
    print(markdown)
    if options.update_docs:
        from bench import docs_copy

        page = REPO / "docs" / "performance.md"
        published = docs_copy.publish("metrics_overhead", {"meta": meta, **result}, markdown, page, top=4)
        print("updated " + ", ".join(str(path.relative_to(REPO)) for path in published))
    return 0


if __name__ == "__main__":
    sys.exit(main())
