"""Image encoding (runs off the event loop, in the replica's encoder thread).

PNG is the default at zlib level 1 (``AppArgs.png_compress_level``). How much faster than Pillow's default
level 6 that is depends on the picture: the committed measurement (docs/bench/png_levels.md, made with
``.venv/bin/python bench/png_levels.py --out docs/bench``) has level 1 at 0.21x the time of level 6 for
1.31x the bytes on a smooth 1024x1024 image, and 0.74x the time for 1.09x the bytes on a noisy one (zlib's
worst case); level 0 stores raw pixels. JPEG is far smaller and faster when lossless output is not needed;
WebP is smallest but slow. Re-run the script rather than trusting these figures on other hardware.
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
