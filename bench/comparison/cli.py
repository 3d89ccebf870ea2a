"""``bench/compare.py``: run the comparison and write ``bench/results/compare-<UTC time>.{json,md,png}``
(plus ``latest.*`` copies), then print the Markdown table."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import docs_copy
from bench.comparison.config import REPO, Plan, Scenario
from bench.comparison.measure import BarePipeline, encode_figures, load_average, machine_facts, measure_designs
from bench.comparison.report import plot, render_markdown
from bench.comparison.results import Report

#: The page that shows the committed run (docs_copy markers "compare"), and its heading level there.
PAGE, PAGE_HEADING_LEVEL = REPO / "docs" / "performance.md", 3


def parse_cli(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/compare.py", description="Seed design vs our app, side by side.")
    parser.add_argument("--quick", action="store_true", help="fewer requests per level (~1-2 minutes)")
    parser.add_argument(
        "--values", help="chart values file of the scenario to deploy (default chart/ci/cpu-local-values.yaml)"
    )
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument("--rounds", type=int, help="repeat the whole ladder N times (default 1 quick, 3 full)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="also make this run the committed one: docs/bench/compare.{json,md} "
        f"and its copy in {PAGE.relative_to(REPO)}",
    )
    options = parser.parse_args(argv)
    if options.update_docs and (options.quick or options.values or options.levels != "1,4,16" or options.rounds):
        parser.error("--update-docs publishes only the full run of the chart's local scenario (no other options)")
    if options.update_docs:
        docs_copy.require_markers(PAGE, "compare")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_cli(argv)
    plan = Plan.create(quick=options.quick, levels=options.levels, rounds=options.rounds)
    out_dir = Path(options.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    scenario = Scenario.from_values(options.values)
    args = scenario.args
    width, height = args.default_size
    print(f"our app: {scenario.source}", flush=True)

    headers = {}
    if args.api_key_env:
        # The scenario may switch the API key on; the bench then sends it, as a client would.
        os.environ.setdefault(args.api_key_env, "bench-" + os.urandom(8).hex())
        headers["Authorization"] = f"Bearer {os.environ[args.api_key_env]}"

    started_load = load_average()
    print("in-process: bare pipeline and batching ...", flush=True)
    bare_pipeline = BarePipeline(args, scenario.threads)
    bare = bare_pipeline.figures(args.batch_size, plan.bare_repeats)
    print("in-process: encoding 1024x1024 ...", flush=True)
    encoding = encode_figures(args, plan.encode_repeats)
    report = Report(
        mode=plan.mode,
        utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=" ".join([Path(sys.executable).name, "bench/compare.py", *(sys.argv[1:] if argv is None else argv)]),
        machine=machine_facts(),
        load_average={"start": started_load},
        our_config_source=scenario.source,
        our_application=scenario.application,
        levels=list(plan.levels),
        rounds=plan.rounds,
        workload={
            "model_id": args.model_id,
            "backend": args.backend,
            "steps": args.default_steps,
            "guidance_scale": args.default_guidance_scale,
            "size": f"{width}x{height}",
            "replicas": scenario.replicas,
            "ray_actor_options": scenario.actor_options,
            "batch_size": args.batch_size,
            "batch_wait_timeout_s": args.batch_wait_timeout_s,
        },
        bare=bare,
        encoding=encoding,
    )

    measured = measure_designs(scenario, plan, bare_pipeline, headers)
    report.deploy_s = measured.deploy_s
    report.per_round = measured.per_round
    report.results = measured.pooled()
    report.replica_rss_mib = measured.replica_rss_mib
    if measured.bare_runs:
        import statistics

        report.bare.bare_p50_s = statistics.median(measured.bare_runs)
        report.bare.bare_source = "rotation"
    report.bare.bare_samples = len(measured.bare_runs)
    report.load_average["end"] = load_average()
    report.derive()

    data = report.to_json()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    markdown = render_markdown(data)
    paths = {ext: out_dir / f"compare-{stamp}.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(data, indent=2, default=str))
    paths["md"].write_text(markdown)
    plot(data, paths["png"])
    for ext, path in paths.items():
        shutil.copyfile(path, out_dir / f"latest.{ext}")
    print()
    print(markdown)
    written = ", ".join(str(p.relative_to(REPO) if p.is_relative_to(REPO) else p) for p in paths.values())
    print(f"wrote {written} (+ latest.*)")
    if options.update_docs:
        published = docs_copy.publish("compare", data, markdown, PAGE, PAGE_HEADING_LEVEL)
        print("updated " + ", ".join(str(path.relative_to(REPO)) for path in published))
    return 0
