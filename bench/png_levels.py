"""Pillow encode time and size per PNG zlib level (and JPEG/WebP) on a 1024x1024 image.

    .venv/bin/python bench/png_levels.py [--out DIR]

Prints a Markdown table and writes png_levels.json and png_levels.md into DIR (default bench/results/;
the committed copy behind ``png_compress_level``'s default of 1 is docs/bench/png_levels.md, made with
``--out docs/bench``). Two stand-ins for an SDXL output: "smooth" (gradients,
blurred like a rendered image) and "noisy" (with sensor-like noise, zlib's worst case).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def test_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1024, 0:1024]
    base = np.stack([(np.sin(x / 60) + 1) * 100, (np.cos(y / 45) + 1) * 100, ((x + y) / 2048) * 255], -1)
    noisy = Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
    return {"smooth": noisy.filter(ImageFilter.GaussianBlur(2)), "noisy": noisy}


def best_of(image: Image.Image, repeats: int, **save) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        buffer = io.BytesIO()
        started = time.perf_counter()
        image.save(buffer, **save)
        times.append(time.perf_counter() - started)
        size = buffer.tell()
    return min(times) * 1000, size


def markdown(rows: list[dict]) -> str:
    by_key = {(row["image"], row["encoding"]): row for row in rows}
    lines = [
        f"# Encoding one 1024x1024 image with Pillow ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"`.venv/bin/python bench/png_levels.py --out docs/bench` on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Pillow {Image.__version__}; best of 3-5 runs. 'smooth': gradients blurred like a rendered image; "
        "'noisy': with sensor-like noise (zlib's worst case).",
        "",
        "| image | encoding | ms | MB | time vs png-6 | bytes vs png-6 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        reference = by_key[(row["image"], "png-6")]
        lines.append(
            f"| {row['image']} | {row['encoding']} | {row['ms']:.1f} | {row['bytes'] / 1e6:.2f} | "
            f"{row['ms'] / reference['ms']:.2f} | {row['bytes'] / reference['bytes']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default bench/results)")
    out = parser.parse_args(argv).out
    rows = []
    for name, image in test_images().items():
        for level in (0, 1, 3, 6, 9):
            ms, size = best_of(image, 3 if level == 9 else 5, format="PNG", compress_level=level)
            rows.append({"image": name, "encoding": f"png-{level}", "ms": round(ms, 1), "bytes": size})
        for fmt in ("JPEG", "WEBP"):
            ms, size = best_of(image, 3, format=fmt, quality=90)
            rows.append({"image": name, "encoding": f"{fmt.lower()}-q90", "ms": round(ms, 1), "bytes": size})
    table = markdown(rows)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "png_levels.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "png_levels.md").write_text(table)
    print(f"wrote {out / 'png_levels.json'} and {out / 'png_levels.md'}")


if __name__ == "__main__":
    main()
