"""bench/compare.py's pieces that need no Ray: which scenario it measures, and a report that says where
every figure came from (fed a synthetic run, so the table and the goals cannot rot unnoticed)."""

from __future__ import annotations

import pytest

from bench import loadgen
from bench.comparison.config import DESIGNS, LOCAL_SCENARIO, Plan, Scenario, ScenarioError
from bench.comparison.report import render_markdown
from bench.comparison.results import Bare, Batching, EncodeRow, Report, Summary


def test_the_default_scenario_is_the_charts_cpu_local_one_rendered_by_helm():
    scenario = Scenario.from_values(None)
    assert "chart/ci/cpu-local-values.yaml" in scenario.source and LOCAL_SCENARIO.is_file()
    assert scenario.application["import_path"] == "app.main:build_app"
    assert scenario.args.model_id == "embedded"
    ours, seed, nowait = scenario.applications()
    assert seed["deployments"][0]["ray_actor_options"] == scenario.actor_options
    assert (seed["args"]["width"], seed["args"]["height"]) == scenario.args.default_size
    assert nowait["args"]["batch_wait_timeout_s"] == 0.0 and ours["args"] != nowait["args"]


def test_a_scenario_the_chart_refuses_stops_the_run_instead_of_measuring_a_stand_in(tmp_path):
    values = tmp_path / "broken-values.yaml"
    values.write_text("replicas: 0.5\n")
    with pytest.raises(ScenarioError, match="does not render with"):
        Scenario.from_values(str(values))
    with pytest.raises(ScenarioError, match="no such file"):
        Scenario.from_values(str(tmp_path / "missing.yaml"))


def synthetic_run(latency: float, count: int, batch: int | None = None) -> loadgen.RunResult:
    samples = [
        loadgen.Sample(started=i, finished=i + latency, status=200, nbytes=100, batch_size=batch) for i in range(count)
    ]
    return loadgen.RunResult(concurrency=1, samples=samples, wall_s=latency * count)


def synthetic_report(levels: list[int], bare_source: str) -> Report:
    batching = Batching(
        batch_size_in_use=4,
        probe_batch=4,
        images_per_s_batch1=10,
        images_per_s_batch=16,
        efficiency=1.6,
        batch_call_p50_s=0.25,
    )
    bare = Bare(threads=1, call={}, bare_p50_s=0.05, bare_min_s=0.04, batching=batching, bare_source=bare_source)
    latencies = {"seed": 0.1, "ours": 0.08, "ours-nowait": 0.09}
    report = Report(
        mode="quick",
        utc="2026-12-02T00:00:00Z",
        command="python bench/compare.py --quick",
        machine={
            "cpu_model": "test CPU",
            "logical_cpus": 2,
            "memory_gib": 1,
            "platform": "test",
            "python": "3.11",
            "versions": {"ray": "2.60.0"},
        },
        load_average={"start": [0.1], "end": [0.2]},
        our_config_source="test",
        our_application={},
        levels=levels,
        rounds=1,
        workload={
            "model_id": "embedded",
            "backend": "cpu",
            "steps": 4,
            "guidance_scale": 5.0,
            "size": "128x96",
            "replicas": 2,
            "ray_actor_options": {},
            "batch_size": 4,
        },
        bare=bare,
        encoding=[EncodeRow("photo-like", "jpeg (q90)", 2.5, 1000)],
    )
    for design in DESIGNS:
        report.results[design] = {}
        report.per_round[design] = {}
        for level in levels:
            # Ours is 2.5x faster in throughput at 16 (lower latency in a closed loop).
            latency = latencies[design] / (2.5 if level == 16 and design == "ours" else 1)
            summary = Summary.of(synthetic_run(latency, 10, batch=None if design == "seed" else 2))
            report.results[design][str(level)] = summary
            report.per_round[design][str(level)] = [summary]
    report.derive()
    return report


def test_the_report_judges_the_goals_from_the_measured_ratios():
    report = synthetic_report([1, 16], "rotation")
    assert report.goals.p50_ratio_c1 == pytest.approx(0.8)
    assert report.goals.p50_met and report.goals.throughput_met
    markdown = render_markdown(report.to_json())
    assert "| p50 at concurrency 1, ours / seed | ≤ 0.85 | 0.800 |" in markdown
    assert "timed in rotation with the concurrency-1 requests" in markdown


def test_a_bare_figure_not_measured_beside_the_requests_is_labelled_as_such():
    markdown = render_markdown(synthetic_report([1, 16], "pre-run").to_json())
    assert "timed before the services started, because no concurrency-1 level ran" in markdown
    assert "in rotation" not in markdown


def test_plans_size_the_run():
    quick, full = (
        Plan.create(quick=True, levels="1,4,16", rounds=None),
        Plan.create(quick=False, levels="1,16", rounds=2),
    )
    assert (quick.rounds, quick.requests_at(16), full.rounds, full.requests_at(16), full.levels) == (
        1,
        48,
        2,
        128,
        (1, 16),
    )
