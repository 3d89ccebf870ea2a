"""Pillow encode time and size per PNG zlib level (and JPEG/WebP) on a 1024x1024 image.

    .venv/bin/python bench/png_levels.py

Prints a table and writes bench/results/png_levels.json; the figures behind ``png_compress_level``'s
default of 1 are recorded in app/encoding.py. Two stand-ins for an SDXL output: "smooth" (gradients,
blurred like a rendered image) and "noisy" (with sensor-like noise, zlib's worst case).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

OUT = Path(__file__).resolve().parent / "results" / "png_levels.json"


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


def main() -> None:
    rows = []
    for name, image in test_images().items():
        for level in (0, 1, 3, 6, 9):
            ms, size = best_of(image, 3 if level == 9 else 5, format="PNG", compress_level=level)
            rows.append({"image": name, "encoding": f"png-{level}", "ms": round(ms, 1), "bytes": size})
        for fmt in ("JPEG", "WEBP"):
            ms, size = best_of(image, 3, format=fmt, quality=90)
            rows.append({"image": name, "encoding": f"{fmt.lower()}-q90", "ms": round(ms, 1), "bytes": size})
    print(f"{'image':<8}{'encoding':<11}{'ms':>9}{'MB':>8}")
    for row in rows:
        print(f"{row['image']:<8}{row['encoding']:<11}{row['ms']:>9.1f}{row['bytes'] / 1e6:>8.2f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
