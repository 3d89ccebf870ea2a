"""Full-size SDXL through our own DiffusersBackend on one device: seconds per image, memory, speed options.

    python3 bench/device_check.py OUTDIR                      # cuda, fp16, 1024x1024, 30 steps, batches 1,2,4
    python3 bench/device_check.py OUTDIR --device cpu --tiny --size 128 --steps 2 --batches 1,2   # CPU dry run

It builds SDXL base 1.0 at its published size with random weights directly on the device
(``bench/full_size_sdxl.py``; compute does not depend on weight values, the images are noise), hands
the pipeline to :class:`app.backends.diffusers_backend.DiffusersBackend` with the options under test
set in :class:`app.config.AppArgs`, and times ``DiffusersBackend.generate`` on batches of
``ImageJob`` (what a replica does per batch; no HTTP, no Ray). Per batch size: one warm-up call
(``--warmup-steps``), then the median of ``--repeats`` calls; peak memory is
``torch.cuda.max_memory_allocated`` since a reset at the start of that batch size.

In order, so that a run cut short by ``--budget-s`` keeps the most useful results:

1. ``baseline``: the backend's defaults (SDPA attention, SDXL's VAE upcast to fp32 to decode), every batch size;
2. each option alone at ``--option-batch``: ``channels_last``, ``fuse_qkv``, and ``fp16_vae`` (a VAE
   with the fp16-fix config, ``force_upcast: false``, loaded through ``vae_model_id``);
3. ``kept``: the options faster than the baseline by more than ``--keep-threshold``, together, every batch size;
4. ``compile_unet`` on top of the kept options, at ``--option-batch``, in a child process killed
   after ``--compile-timeout-s`` (``torch.compile`` cannot be interrupted in-process).

Writes OUTDIR/device_check.json and OUTDIR/device_check.md after every case, so a run stopped at any
point leaves what it measured. Imports torch, diffusers, transformers and pydantic; never Ray.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PROMPT = "an astronaut is dancing on green grass, sunlit"
SINGLE_OPTIONS = ("channels_last", "fuse_qkv", "fp16_vae")
MODEL_LABEL = "SDXL base 1.0 architecture, random weights (bench/full_size_sdxl.py)"


class Clock:
    """The run's wall-clock budget."""

    def __init__(self, budget_s: float):
        self.started = time.monotonic()
        self.deadline = self.started + budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--dtype",
        choices=("auto", "fp16", "fp32"),
        default="auto",
        help="only a check: DiffusersBackend runs fp16 on cuda and fp32 on cpu",
    )
    parser.add_argument("--size", type=int, default=1024, help="square image side in pixels")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batches", default="1,2,4", help="comma-separated images per call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per batch size (median)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps of the untimed first call per batch size")
    parser.add_argument(
        "--option-batch",
        type=int,
        default=None,
        help="batch size options are measured at (default: first of --batches)",
    )
    parser.add_argument(
        "--keep-threshold",
        type=float,
        default=0.03,
        help="an option is kept when s/image drops by more than this fraction",
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="stop measuring after this many seconds (output is still written)"
    )
    parser.add_argument("--compile-timeout-s", type=float, default=150.0, help="time box of the torch.compile child")
    parser.add_argument("--tiny", action="store_true", help="the same architecture at toy width/depth (CPU dry run)")
    parser.add_argument("--child-case", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batches = [int(value) for value in args.batches.split(",") if value.strip()]
    if not args.batches or min(args.batches) < 1:
        parser.error("--batches needs positive integers")
    if args.option_batch is None:
        args.option_batch = args.batches[0]
    if args.repeats < 1 or args.steps < 1 or args.warmup_steps < 1:
        parser.error("--repeats, --steps and --warmup-steps must be at least 1")
    backend_dtype = "fp16" if args.device == "cuda" else "fp32"
    if args.dtype not in ("auto", backend_dtype):
        parser.error(
            f"DiffusersBackend runs {backend_dtype} on {args.device}; --dtype {args.dtype} is not a backend setting"
        )
    args.dtype = backend_dtype
    return args


def app_args(cli: argparse.Namespace, options: list[str], vae_dir: str | None):
    from app.config import AppArgs

    return AppArgs(
        model_id="random-weight-sdxl-base",  # informational: the pipeline is handed to the backend
        backend=cli.device,
        image_sizes=(f"{cli.size}x{cli.size}",),
        batch_size=max(cli.batches + [cli.option_batch]),
        diffusers_optimizations=tuple(name for name in options if name != "fp16_vae"),
        vae_model_id=vae_dir if "fp16_vae" in options else None,
        warmup=False,
    )


def jobs_for(cli: argparse.Namespace, batch: int, steps: int, first_seed: int) -> list:
    from app.config import AppArgs
    from app.jobs import ImageJob

    guidance = AppArgs.model_fields["default_guidance_scale"].default
    return [
        ImageJob(
            prompt=PROMPT,
            negative_prompt=None,
            seed=first_seed + index,
            steps=steps,
            guidance_scale=guidance,
            width=cli.size,
            height=cli.size,
        )
        for index in range(batch)
    ]


def free_device_memory(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def measure_batch(cli, backend, batch: int, clock: Clock, expected_call_s: float | None) -> dict:
    """One warm-up call, then up to ``--repeats`` timed calls while the budget lasts."""
    import numpy as np
    import torch

    cuda = cli.device == "cuda"
    row: dict = {"batch": batch, "calls_s": []}
    if expected_call_s is not None and clock.left() < expected_call_s * (1 + cli.warmup_steps / cli.steps):
        row.update(
            status="skipped",
            reason=f"wall-clock budget: ~{expected_call_s:.1f} s per call, {max(clock.left(), 0):.0f} s left",
        )
        return row
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    backend.generate(jobs_for(cli, batch, cli.warmup_steps, first_seed=0))
    row["warmup_s"] = round(time.perf_counter() - started, 3)
    images = None
    for repeat in range(cli.repeats):
        estimate = row["calls_s"][-1] if row["calls_s"] else expected_call_s
        if estimate is not None and clock.left() < estimate:
            break
        started = time.perf_counter()
        images = backend.generate(jobs_for(cli, batch, cli.steps, first_seed=1000 * (repeat + 1)))
        row["calls_s"].append(round(time.perf_counter() - started, 4))
        if clock.left() <= 0:
            break
    if not row["calls_s"]:
        row.update(status="skipped", reason="wall-clock budget ran out after the warm-up call")
        return row
    per_call = statistics.median(row["calls_s"])
    row.update(
        status="measured" if len(row["calls_s"]) == cli.repeats else "partial",
        s_per_call=round(per_call, 4),
        s_per_image=round(per_call / batch, 6),
        images_per_s=round(batch / per_call, 4),
        peak_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        # Random weights draw noise; a collapsed (NaN/overflowed, then clipped) image would be flat.
        pixel_std=round(float(np.asarray(images[0], dtype=np.float32).std()), 2),
        image_size=list(images[0].size),
    )
    if row["status"] == "partial":
        row["reason"] = f"wall-clock budget: {len(row['calls_s'])} of {cli.repeats} timed calls"
    return row


def run_variant(
    cli,
    name: str,
    options: list[str],
    batches: list[int],
    clock: Clock,
    vae_dir: str | None,
    expected: dict[int, float],
) -> dict:
    """Build the full-size pipeline, wrap it in DiffusersBackend with ``options``, measure ``batches``."""
    import torch

    from app.backends.diffusers_backend import DiffusersBackend
    from bench.full_size_sdxl import FULL, TINY, build_pipeline

    case = {"variant": name, "options": options, "rows": []}
    if expected and clock.left() < expected.get(min(batches), 0.0) * 2:
        case.update(status="skipped", reason=f"wall-clock budget: {max(clock.left(), 0):.0f} s left")
        return case
    dtype = torch.float16 if cli.device == "cuda" else torch.float32
    try:
        started = time.perf_counter()
        pipeline = build_pipeline(TINY if cli.tiny else FULL, device=cli.device, dtype=dtype)
        backend = DiffusersBackend(app_args(cli, options, vae_dir), "random-weight SDXL base", pipeline=pipeline)
        case["setup_s"] = round(time.perf_counter() - started, 2)
        case["backend_details"] = backend.details
        if cli.device == "cuda":
            case["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
        for batch in batches:
            estimate = expected.get(batch)
            done = [row for row in case["rows"] if "s_per_image" in row]
            if estimate is None and done:  # images per call scale about linearly once the GPU is busy
                estimate = done[-1]["s_per_image"] * batch
            case["rows"].append(measure_batch(cli, backend, batch, clock, estimate))
    except Exception as error:  # noqa: BLE001 (one broken option must not cost the other measurements)
        traceback.print_exc()
        case.update(status="failed", reason=f"{type(error).__name__}: {error}"[:500])
        return case
    finally:
        backend = pipeline = None
        free_device_memory(cli.device)
    measured = [row for row in case["rows"] if "s_per_image" in row]
    case["status"] = (
        "measured"
        if measured and all(row["status"] == "measured" for row in case["rows"])
        else ("partial" if measured else "skipped")
    )
    if case["status"] != "measured":
        case["reason"] = next((row["reason"] for row in case["rows"] if row.get("reason")), "no batch measured")
    return case


def run_child_variant(cli, name: str, options: list[str], vae_dir: str | None, timeout_s: float, scratch: Path) -> dict:
    """Run one variant in a child process (its own session), killed with everything it started at ``timeout_s``."""
    case = {"variant": name, "options": options, "rows": []}
    result_path = scratch / f"{name}.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        str(cli.outdir),
        "--device",
        cli.device,
        "--size",
        str(cli.size),
        "--steps",
        str(cli.steps),
        "--batches",
        str(cli.option_batch),
        "--repeats",
        str(cli.repeats),
        "--warmup-steps",
        str(cli.warmup_steps),
        "--budget-s",
        str(max(timeout_s - 5, 1)),
        "--child-case",
        json.dumps({"name": name, "options": options, "vae_dir": vae_dir}),
        "--child-result",
        str(result_path),
    ] + (["--tiny"] if cli.tiny else [])
    started = time.monotonic()
    child = subprocess.Popen(command, start_new_session=True)
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the child's session: inductor's compile workers too
        child.wait()
        case.update(
            status="skipped",
            reason=(f"time box: did not build, compile and finish its calls within {timeout_s:.0f} s (child killed)"),
        )
        return case
    finally:
        case["child_s"] = round(time.monotonic() - started, 1)
    if child.returncode != 0 or not result_path.is_file():
        case.update(status="failed", reason=f"child process exited with {child.returncode}")
        return case
    return {**json.loads(result_path.read_text()), "child_s": case["child_s"]}


def environment(cli) -> dict:
    import diffusers
    import pydantic
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "pydantic": pydantic.VERSION,
        "device_name": torch.cuda.get_device_name(0) if cli.device == "cuda" else platform.processor() or "cpu",
    }
    for package in ("huggingface_hub", "tokenizers", "accelerate"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = None
    if cli.device == "cuda":
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def parameter_counts(cli) -> dict:
    from bench.full_size_sdxl import FULL, TINY, build_components
    from bench.full_size_sdxl import parameter_counts as count

    return count(build_components(TINY if cli.tiny else FULL, device="meta"))


def option_summary(report: dict, keep_threshold: float) -> dict:
    """Each option's s/image at the option batch against the baseline's (or the kept set's, for compile)."""

    def s_per_image(case: dict | None, batch: int) -> float | None:
        for row in (case or {}).get("rows", []):
            if row["batch"] == batch and "s_per_image" in row:
                return row["s_per_image"]
        return None

    batch = report["settings"]["option_batch"]
    cases = {case["variant"]: case for case in report["cases"]}
    summary = {}
    for name in (*SINGLE_OPTIONS, "compile_unet"):
        case = cases.get(name)
        if case is None:
            summary[name] = {
                "status": "pending" if not report.get("finished") else "skipped",
                "kept": False,
                "reason": "not reached yet" if not report.get("finished") else "not reached: wall-clock budget",
            }
            continue
        reference_name = "kept" if name == "compile_unet" and s_per_image(cases.get("kept"), batch) else "baseline"
        reference = s_per_image(cases.get(reference_name), batch)
        value = s_per_image(case, batch)
        entry = {
            "status": case["status"],
            "options": case["options"],
            "batch": batch,
            "s_per_image": value,
            "reference": reference_name,
            "reference_s_per_image": reference,
        }
        if case.get("reason"):
            entry["reason"] = case["reason"]
        first_calls = [row["warmup_s"] for row in case.get("rows", []) if "warmup_s" in row]
        if name == "compile_unet" and first_calls:
            entry["first_call_s"] = first_calls[0]  # includes the compilation
        if value is not None and reference:
            entry["speedup"] = round(reference / value, 3)
            entry["kept"] = value < reference * (1 - keep_threshold)
        else:
            entry["kept"] = False
        summary[name] = entry
    return summary


def write_outputs(report: dict, outdir: Path) -> str:
    report["optimizations"] = option_summary(report, report["settings"]["keep_threshold"])
    table = markdown(report)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "device_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (outdir / "device_check.md").write_text(table)
    return table


def markdown(report: dict) -> str:
    settings, env = report["settings"], report["environment"]
    counts = ", ".join(f"{name} {value:,}" for name, value in report["parameter_counts"].items())
    lines = [
        f"## SDXL base through DiffusersBackend on {env.get('device_name', '?')} "
        f"({settings['device']}, {settings['dtype']})",
        "",
        f"- Run: {report['started_utc']}; command `{report['command']}`",
        f"- Versions: torch {env.get('torch')} (CUDA {env.get('cuda')}), diffusers {env.get('diffusers')}, "
        f"transformers {env.get('transformers')}, Python {env.get('python')}",
        f"- Model: {report['model']}; parameters {counts}. "
        "Random weights: the images are noise, the arithmetic is SDXL's.",
        f"- Workload: {settings['size']}x{settings['size']}, {settings['steps']} steps, "
        f"guidance {settings['guidance_scale']} "
        f"(classifier-free guidance: the UNet runs on twice the batch), Euler; per batch size one warm-up call of "
        f"{settings['warmup_steps']} steps, "
        f"then the median of {settings['repeats']} timed calls of DiffusersBackend.generate.",
        f"- Budget {settings['budget_s']:g} s, used {report['elapsed_s']:.0f} s"
        + ("; stopped early by the budget" if report.get("stopped_by_budget") else ""),
        "",
        "| variant | options | batch | s/image | images/s | s/call (median) | calls | peak memory GiB | vs baseline |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    baseline = {
        row["batch"]: row.get("s_per_image")
        for case in report["cases"]
        if case["variant"] == "baseline"
        for row in case["rows"]
    }
    for case in report["cases"]:
        options = ", ".join(case["options"]) or "defaults (SDPA)"
        if not case["rows"]:
            lines.append(
                f"| {case['variant']} | {options} | - | - | - | - | 0 | - | "
                f"{case['status']}: {case.get('reason', '')} |"
            )
        for row in case["rows"]:
            if "s_per_image" not in row:
                lines.append(
                    f"| {case['variant']} | {options} | {row['batch']} | - | - | - | 0 | - | "
                    f"{row['status']}: {row.get('reason', '')} |"
                )
                continue
            memory = "n/a (cpu)" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.2f}"
            reference = baseline.get(row["batch"])
            versus = f"{reference / row['s_per_image']:.2f}x" if reference else "-"
            lines.append(
                f"| {case['variant']} | {options} | {row['batch']} | {row['s_per_image']:.3f} | "
                f"{row['images_per_s']:.2f} | {row['s_per_call']:.3f} | {len(row['calls_s'])} | {memory} | {versus} |"
            )
    lines += [
        "",
        f"### Options (at batch {settings['option_batch']}; kept when more than "
        f"{settings['keep_threshold']:.0%} faster than the reference)",
        "",
        "| option | status | s/image | reference | reference s/image | speedup | kept | note |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]
    for name, entry in report["optimizations"].items():
        value = "-" if entry.get("s_per_image") is None else f"{entry['s_per_image']:.3f}"
        reference = "-" if entry.get("reference_s_per_image") is None else f"{entry['reference_s_per_image']:.3f}"
        speedup = f"{entry['speedup']:.2f}x" if "speedup" in entry else "-"
        note = entry.get("reason", "")
        if "first_call_s" in entry:
            note = f"first call, compiling: {entry['first_call_s']:.0f} s. {note}".strip()
        lines.append(
            f"| {name} | {entry['status']} | {value} | {entry.get('reference', '-')} | {reference} | "
            f"{speedup} | {'yes' if entry['kept'] else 'no'} | {note} |"
        )
    return "\n".join(lines) + "\n"


def save_fixed_vae(cli, scratch: Path) -> str:
    """A VAE of SDXL's architecture with the fp16-fix config (force_upcast false), for ``vae_model_id``."""
    import torch

    from bench.full_size_sdxl import FULL, TINY, build_vae

    directory = scratch / "vae-fp16-fix-config"
    with torch.device(cli.device):
        vae = build_vae(TINY if cli.tiny else FULL, force_upcast=False)
    vae.to(torch.float16 if cli.device == "cuda" else torch.float32).save_pretrained(directory, safe_serialization=True)
    del vae
    free_device_memory(cli.device)
    return str(directory)


def cut_by_budget(case: dict) -> bool:
    reasons = [case.get("reason") or ""] + [row.get("reason") or "" for row in case.get("rows", [])]
    return any(reason.startswith("wall-clock budget") for reason in reasons)


def expected_call_seconds(case: dict) -> dict[int, float]:
    return {row["batch"]: row["s_per_call"] for row in case.get("rows", []) if "s_per_call" in row}


def child_main(cli) -> int:
    spec = json.loads(cli.child_case)
    clock = Clock(cli.budget_s)
    case = run_variant(cli, spec["name"], spec["options"], [cli.option_batch], clock, spec["vae_dir"], {})
    cli.child_result.write_text(json.dumps(case))
    return 0


def main(argv: list[str]) -> int:
    cli = parse_args(argv)
    if cli.child_case:
        return child_main(cli)
    with tempfile.TemporaryDirectory(prefix="device-check-") as scratch:
        return check(cli, argv, Path(scratch))


def check(cli, argv: list[str], scratch: Path) -> int:
    clock = Clock(cli.budget_s)
    report = {
        "started_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python3", "bench/device_check.py", *argv]),
        "model": MODEL_LABEL + (" at toy size (--tiny)" if cli.tiny else ""),
        "settings": {
            "device": cli.device,
            "dtype": cli.dtype,
            "size": cli.size,
            "steps": cli.steps,
            "batches": cli.batches,
            "repeats": cli.repeats,
            "warmup_steps": cli.warmup_steps,
            "option_batch": cli.option_batch,
            "keep_threshold": cli.keep_threshold,
            "budget_s": cli.budget_s,
            "compile_timeout_s": cli.compile_timeout_s,
            "guidance_scale": None,
            "tiny": cli.tiny,
        },
        "cases": [],
    }
    from app.config import AppArgs

    report["settings"]["guidance_scale"] = AppArgs.model_fields["default_guidance_scale"].default
    report["environment"] = environment(cli)
    report["parameter_counts"] = parameter_counts(cli)

    def record(case: dict) -> dict:
        report["cases"].append(case)
        report["elapsed_s"] = round(clock.elapsed(), 1)
        report["stopped_by_budget"] = any(cut_by_budget(case) for case in report["cases"])
        write_outputs(report, cli.outdir)
        rows = ", ".join(
            f"batch {row['batch']}: {row['s_per_image']:.3f} s/image"
            if "s_per_image" in row
            else f"batch {row['batch']}: {row['status']}"
            for row in case["rows"]
        )
        print(
            f"[{clock.elapsed():6.1f} s] {case['variant']}: {case['status']} {rows} {case.get('reason', '')}",
            flush=True,
        )
        return case

    baseline = record(run_variant(cli, "baseline", [], cli.batches, clock, None, {}))
    expected = expected_call_seconds(baseline)
    vae_dir = None
    for name in SINGLE_OPTIONS:
        if name == "fp16_vae" and vae_dir is None and clock.left() > 0:
            vae_dir = save_fixed_vae(cli, scratch)
        record(run_variant(cli, name, [name], [cli.option_batch], clock, vae_dir, expected))
    summary = option_summary(report, cli.keep_threshold)
    kept = [name for name in SINGLE_OPTIONS if summary[name]["kept"]]
    if kept:
        record(run_variant(cli, "kept", kept, cli.batches, clock, vae_dir, expected))
    compile_box = min(cli.compile_timeout_s, clock.left())
    if compile_box < 1:
        record(
            {
                "variant": "compile_unet",
                "options": kept + ["compile_unet"],
                "rows": [],
                "status": "skipped",
                "reason": "wall-clock budget: no time left for the torch.compile child",
            }
        )
    else:
        record(run_child_variant(cli, "compile_unet", kept + ["compile_unet"], vae_dir, compile_box, scratch))
    report["elapsed_s"] = round(clock.elapsed(), 1)
    report["finished"] = True
    print(write_outputs(report, cli.outdir))
    print(f"wrote {cli.outdir / 'device_check.json'} and {cli.outdir / 'device_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
