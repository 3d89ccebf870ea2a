"""bench/device_check.py, dry-run on CPU at toy size: the GPU check's table, JSON and time box work without a GPU.

The script runs where Ray does not exist (the GPU machine), so these runs hide Ray behind a package
that refuses to import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.serve_cluster import REPO_ROOT, embedded_model_dir

DRY_RUN = [
    "--device",
    "cpu",
    "--tiny",
    "--size",
    "128",
    "--steps",
    "2",
    "--warmup-steps",
    "1",
    "--repeats",
    "2",
    "--batches",
    "1,2",
]


def run_device_check(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    blocker = tmp_path / "no-ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("the GPU machine has no Ray")\n')
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO_ROOT)]),
        "SDXL_EMBEDDED_MODEL_DIR": str(embedded_model_dir()),
        "HF_HUB_OFFLINE": "1",
    }
    outdir = tmp_path / "out"
    process = subprocess.run(
        [sys.executable, "bench/device_check.py", str(outdir), *DRY_RUN, *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads((outdir / "device_check.json").read_text())
    return process, report, (outdir / "device_check.md").read_text()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    # A 1 s time box for torch.compile: the child is started and killed, the path a slow compile takes.
    return run_device_check(tmp_path_factory.mktemp("dry-run"), "--compile-timeout-s", "1")


def test_the_baseline_has_one_measured_row_per_batch_size(dry_run):
    _, report, _ = dry_run
    (baseline,) = [case for case in report["cases"] if case["variant"] == "baseline"]
    assert baseline["status"] == "measured" and baseline["options"] == []
    assert [row["batch"] for row in baseline["rows"]] == [1, 2]
    for row in baseline["rows"]:
        assert len(row["calls_s"]) == 2 and row["s_per_call"] > 0
        assert row["s_per_image"] == pytest.approx(row["s_per_call"] / row["batch"], rel=1e-3)
        assert row["images_per_s"] == pytest.approx(row["batch"] / row["s_per_call"], rel=1e-3)
        assert row["peak_memory_gib"] is None  # cpu: no CUDA allocator to ask
        assert row["image_size"] == [128, 128] and row["pixel_std"] > 0  # noise, not a collapsed image


def test_each_option_is_measured_through_the_backend_with_that_option_set(dry_run):
    _, report, _ = dry_run
    cases = {case["variant"]: case for case in report["cases"]}
    assert cases["channels_last"]["backend_details"]["optimizations"] == ["channels_last"]
    assert cases["fuse_qkv"]["backend_details"]["optimizations"] == ["fuse_qkv"]
    assert cases["fp16_vae"]["backend_details"]["vae"].endswith("vae-fp16-fix-config")
    for name in ("channels_last", "fuse_qkv", "fp16_vae"):
        entry = report["optimizations"][name]
        assert entry["status"] == "measured" and entry["reference"] == "baseline"
        assert entry["speedup"] == pytest.approx(entry["reference_s_per_image"] / entry["s_per_image"], rel=1e-2)
        assert entry["kept"] == (entry["s_per_image"] < entry["reference_s_per_image"] * 0.97)
    kept = [name for name in ("channels_last", "fuse_qkv", "fp16_vae") if report["optimizations"][name]["kept"]]
    assert ("kept" in cases) == bool(kept)
    if kept:
        assert cases["kept"]["options"] == kept and [row["batch"] for row in cases["kept"]["rows"]] == [1, 2]


def test_a_compile_that_overruns_its_time_box_is_recorded_as_skipped_with_the_reason(dry_run):
    _, report, table = dry_run
    entry = report["optimizations"]["compile_unet"]
    assert entry["status"] == "skipped" and entry["kept"] is False
    assert "time box" in entry["reason"] and "1 s" in entry["reason"]
    assert "| compile_unet | skipped |" in table


def test_the_markdown_table_is_printed_and_written_with_a_row_per_variant_and_batch(dry_run):
    process, report, table = dry_run
    assert table.strip() in process.stdout
    assert "| variant | options | batch | s/image | images/s |" in table
    assert sum(line.startswith("| baseline |") for line in table.splitlines()) == 2
    for name in ("channels_last", "fuse_qkv", "fp16_vae", "compile_unet"):
        assert sum(line.startswith(f"| {name} |") for line in table.splitlines()) >= 1
    assert report["environment"]["torch"] and report["parameter_counts"]["unet"] > 0
    assert report["finished"] is True and report["stopped_by_budget"] is False


def test_when_the_budget_runs_out_it_stops_measuring_and_still_writes_everything(tmp_path):
    _, report, table = run_device_check(tmp_path, "--budget-s", "0.5")
    assert report["stopped_by_budget"] is True and report["finished"] is True
    (baseline,) = [case for case in report["cases"] if case["variant"] == "baseline"]
    # Nothing is known about the first call's cost, so it runs; then the budget decides.
    assert baseline["rows"][0]["calls_s"] and baseline["rows"][1]["status"] == "skipped"
    for name in ("channels_last", "fuse_qkv", "fp16_vae", "compile_unet"):
        assert report["optimizations"][name]["status"] == "skipped"
        assert report["optimizations"][name]["reason"].startswith("wall-clock budget")
    assert "stopped early by the budget" in table
