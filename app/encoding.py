"""Image encoding (runs off the event loop, in the replica's encoder thread).

PNG is the default at zlib level 1 (``AppArgs.png_compress_level``). Measured with Pillow 11 on this
project's shared 2-core build machine, one 1024x1024 RGB image, best of 5 (``bench/png_levels.py``; recorded
here, not asserted in a test). "smooth" is a gradient photo stand-in blurred like SDXL output; "noisy"
adds sensor-like noise (the worst case for zlib):

==============  ===============  ===============
encoding        smooth ms / MB   noisy ms / MB
==============  ===============  ===============
PNG level 0     28 / 3.15        54 / 3.15
PNG level 1     53 / 0.78        112 / 2.21
PNG level 3     93 / 0.70        115 / 2.21
PNG level 6     254 / 0.60       157 / 2.02
PNG level 9     5350 / 0.54      157 / 2.02
JPEG q90        6 / 0.09         3 / 0.24
WebP q90        164 / 0.03       104 / 0.25
==============  ===============  ===============

Level 1 is ~5x faster than Pillow's default 6 on smooth images for ~30 % more bytes (~10 % on noisy
ones); level 0 stores raw pixels (4x the bytes). Encoding runs in its own threads, but at ~0.25 s per
image level 6 would cap one replica near 4 images/s of CPU just for PNG. JPEG is ~10x smaller and far
faster when lossless output is not needed; WebP is smallest but slowest.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from app.config import AppArgs


@dataclass(frozen=True)
class EncoderSettings:
    png_compress_level: int
    jpeg_quality: int
    webp_quality: int

    @classmethod
    def from_args(cls, args: AppArgs) -> EncoderSettings:
        return cls(args.png_compress_level, args.jpeg_quality, args.webp_quality)


def encode_image(image, output_format: str, settings: EncoderSettings) -> bytes:
    """Encode a PIL image as ``png``, ``jpeg`` or ``webp``."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG", compress_level=settings.png_compress_level)
    elif output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=settings.jpeg_quality)
    elif output_format == "webp":
        image.save(buffer, format="WEBP", quality=settings.webp_quality)
    else:
        raise ValueError(f"unsupported output format {output_format!r}")
    return buffer.getvalue()
