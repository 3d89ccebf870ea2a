"""The comparison's Markdown table and latency/throughput plot, from a report's JSON form
(:meth:`bench.comparison.results.Report.to_json`), so a saved run can be rendered again."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.comparison.config import DESIGNS, GOAL_P50_RATIO, GOAL_THROUGHPUT_RATIO, PROMPTS


def fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _span(values: list[float]) -> str:
    return f"{min(values):.3f}..{max(values):.3f}" if values else "n/a"


def render_markdown(report: dict) -> str:
    machine = report["machine"]
    workload = report["workload"]
    lines = [
        f"# Seed design vs our app ({report['mode']} run, {report['utc']})",
        "",
        f"- Command: `{report['command']}`",
        f"- Machine: {machine['cpu_model'] or 'unknown CPU'}, {machine['logical_cpus']} logical CPUs, "
        f"{machine['memory_gib']} GiB; {machine['platform']}; Python {machine['python']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v),
        f"- Load average (1/5/15 min) at start {report['load_average']['start']}, "
        f"at end {report['load_average']['end']}"
        " — anything well above 0 means other work shared the CPUs and the numbers are noisy.",
        f"- Our app: {report['our_config_source']}",
        f"- Workload (both designs): model `{workload['model_id']}` ({workload['backend']}), "
        f"{workload['steps']} steps, guidance {workload['guidance_scale']}, {workload['size']}, "
        f"{len(PROMPTS)} prompts cycled; {workload['replicas']} model replica(s) each with "
        f"`ray_actor_options` {json.dumps(workload['ray_actor_options'])}; our batch_size {workload['batch_size']}.",
        "",
        "## Latency and throughput (closed loop, HTTP through the Serve proxy)",
        "",
        "| concurrency | design | requests (200) | p50 s | p99 s | throughput img/s | "
        "batch (service) | other statuses |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for level in report["levels"]:
        for design in DESIGNS:
            r = report["results"][design][str(level)]
            other = {k: v for k, v in r["statuses"].items() if k != "200"}
            lines.append(
                f"| {level} | {design} | {r['ok']}/{r['requests']} | {fmt(r['p50_s'])} | {fmt(r['p99_s'])} | "
                f"{fmt(r['throughput_rps'], 2)} | {fmt(r.get('mean_batch_size'), 2)} | "
                f"{json.dumps(other) if other else '-'} |"
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
        f"{fmt(g['p50_ratio_c1_median'])} | {_span(report['round_ratios']['ours']['p50_c1'])} | "
        f"{'yes' if g['p50_met'] else 'NO'} |",
        f"| throughput at concurrency 16, ours / seed | ≥ {GOAL_THROUGHPUT_RATIO} | "
        f"{fmt(g['throughput_ratio_c16'], 2)} | "
        f"{fmt(g['throughput_ratio_c16_median'], 2)} | {_span(report['round_ratios']['ours']['throughput_c16'])} | "
        f"{'yes' if g['throughput_met'] else 'NO'} |",
        "",
        f"For reference, `ours-nowait` / seed: p50 at 1 = {fmt(report['nowait_vs_seed']['p50_ratio_c1'])}, "
        f"throughput at 16 = {fmt(report['nowait_vs_seed']['throughput_ratio_c16'], 2)}. "
        "The same ratios round by round (each round measures all designs back to back): "
        + "; ".join(
            f"`{d}` p50@1 {r['p50_c1']}, throughput@16 {r['throughput_c16']}" for d, r in report["round_ratios"].items()
        )
        + ".",
        "",
        "## Per-request overhead over a bare in-process pipeline call",
        "",
        f"Bare pipeline call in this process ({report['bare']['threads']} torch thread(s), same call, "
        + (
            "timed in rotation with the concurrency-1 requests"
            if report["bare"]["bare_source"] == "rotation"
            else "timed before the services started, because no concurrency-1 level ran"
        )
        + f"): p50 {fmt(report['bare']['bare_p50_s'])} s. The service's figures include "
        "HTTP, the Serve proxy and router, and PNG encoding; "
        "a negative overhead means background load moved between samples.",
        "",
        "| design | p50 at concurrency 1, s | overhead, s | overhead, % of bare |",
        "|---|---:|---:|---:|",
    ]
    for design in DESIGNS:
        o = report["overhead"][design]
        lines.append(f"| {design} | {fmt(o['p50_c1_s'])} | {fmt(o['overhead_s'])} | {fmt(o['overhead_pct'], 1)} |")
    b = report["bare"]["batching"]
    probe_note = " (in use)" if b["batch_size_in_use"] == b["probe_batch"] else " (probe; batching off)"
    lines += [
        "",
        "## Batching efficiency (in-process pipeline calls)",
        "",
        "| batch | images/s | vs batch 1 |",
        "|---:|---:|---:|",
        f"| 1 | {fmt(b['images_per_s_batch1'], 2)} | 1.00 |",
        f"| {b['probe_batch']}{probe_note} | {fmt(b['images_per_s_batch'], 2)} | {fmt(b['efficiency'], 2)} |",
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
