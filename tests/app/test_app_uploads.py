"""Uploaded images are hostile until decoded: app.uploads turns every kind of file a client may send into
the RGB image (and inpainting mask) a pipeline takes, or a 400 saying which rule it broke.
Pure functions over real image bytes made with Pillow; no replica."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.http import ApiError
from app.uploads import fit, mask_from, open_image, to_rgb

BUDGET = 512 * 512


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def refused(data: bytes, param: str = "image", budget: int = BUDGET) -> ApiError:
    with pytest.raises(ApiError) as caught:
        open_image(data, param, budget)
    assert caught.value.status == 400 and caught.value.param == param
    return caught.value


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_decode_to_rgb(fmt):
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    decoded = to_rgb(open_image(encoded(image, fmt), "image", BUDGET))
    assert decoded.mode == "RGB" and decoded.size == (40, 30)
    assert np.abs(np.asarray(decoded, dtype=int) - [10, 200, 30]).max() < 12


def test_the_format_is_decided_from_the_bytes_not_a_name():
    gif = encoded(Image.new("RGB", (8, 8)), "GIF")
    assert refused(gif).code == "unsupported_image"
    assert "GIF" in refused(gif).message
    assert refused(b"\x89PNG\r\n\x1a\n but not really").code == "unsupported_image"
    assert refused(b"").message == "'image' is an empty file"


def test_a_truncated_file_is_refused_after_its_header_passed():
    whole = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    error = refused(whole[: len(whole) // 2])
    assert error.code == "unsupported_image" and "truncated or corrupt" in error.message


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's first step)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [600, 3000, 60000])
def test_a_header_that_declares_too_many_pixels_is_refused_before_decoding(side):
    error = refused(png_declaring(side, side))
    assert error.code == "image_too_large" and str(BUDGET) in error.message


def test_refusing_a_large_upload_leaves_other_image_decoding_in_the_process_alone():
    # A replica shares its process with other Pillow users (a dashboard snapshot, a UI proxy, tests):
    # the service's upload budget must not become their limit.
    limit_before = Image.MAX_IMAGE_PIXELS
    refused(png_declaring(600, 600), budget=64 * 64)
    assert Image.MAX_IMAGE_PIXELS == limit_before
    large = Image.open(io.BytesIO(encoded(Image.new("RGB", (1080, 892)), "PNG")))
    large.load()
    assert large.size == (1080, 892)


def test_an_animated_image_is_refused():
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    assert "animated (2 frames)" in refused(buffer.getvalue()).message
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:])
    assert "animated" in refused(buffer.getvalue()).message


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("P", "PNG"), ("LA", "PNG"), ("L", "PNG"), ("1", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("RGBA", "WEBP")],
)
def test_every_mode_becomes_rgb(mode, fmt):
    base = Image.linear_gradient("L").resize((32, 32))
    image = base.convert(mode) if mode not in ("I;16",) else Image.fromarray(np.asarray(base, np.uint16) * 257)
    if mode == "P":
        image.info["transparency"] = 0
    decoded = to_rgb(open_image(encoded(image, fmt), "image", BUDGET))
    assert decoded.mode == "RGB" and decoded.size == (32, 32)
    pixels = np.asarray(decoded, dtype=int)
    assert pixels.max() > pixels.min()  # the picture survived the conversion


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert to_rgb(open_image(encoded(clear, "PNG"), "image", BUDGET)).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    ramp = Image.fromarray(np.tile(np.linspace(0, 65535, 32, dtype=np.uint16), (4, 1)))
    decoded = np.asarray(to_rgb(open_image(encoded(ramp, "PNG"), "image", BUDGET)))[..., 0]
    assert decoded[0, 0] < 10 and decoded[0, -1] > 245 and np.all(np.diff(decoded[0].astype(int)) >= 0)


def test_exif_orientation_is_applied():
    upright = Image.new("RGB", (60, 20), (255, 0, 0))
    upright.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left edge
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera stores for orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    decoded = to_rgb(open_image(encoded(stored, "JPEG", exif=exif.tobytes(), quality=95), "image", BUDGET))
    assert decoded.size == (60, 20)
    assert decoded.getpixel((2, 10))[2] > 200 and decoded.getpixel((55, 10))[0] > 200


def test_a_mask_marks_its_fully_transparent_pixels_for_redrawing():
    target = Image.new("RGB", (20, 10))
    mask = Image.new("RGBA", (20, 10), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 5, 10))  # the left quarter transparent
    marked = mask_from(open_image(encoded(mask, "PNG"), "mask", BUDGET), target)
    assert marked.mode == "L" and marked.getpixel((1, 1)) == 255 and marked.getpixel((15, 1)) == 0
    half = Image.new("LA", (20, 10), (0, 128))  # half transparent is not "fully transparent"
    assert mask_from(open_image(encoded(half, "PNG"), "mask", BUDGET), target).getpixel((1, 1)) == 0


def test_a_mask_without_alpha_or_of_another_size_is_refused_with_openais_rule():
    target = Image.new("RGB", (20, 10))
    with pytest.raises(ApiError, match="no alpha channel .* fully transparent pixels mark where to edit") as caught:
        mask_from(open_image(encoded(Image.new("RGB", (20, 10)), "PNG"), "mask", BUDGET), target)
    assert caught.value.param == "mask"
    with pytest.raises(
        ApiError, match="'mask' is 10x10 but 'image' is 20x10: OpenAI's rule is a mask of the image's size"
    ):
        mask_from(Image.new("RGBA", (10, 10)), target)


def test_fitting_covers_the_target_and_crops_the_centre_without_stretching():
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 255, 0), (50, 0, 150, 100))  # the centre square is green
    fitted = fit(wide, 96, 96)
    assert fitted.size == (96, 96)
    assert np.asarray(fitted)[..., 1].mean() > 240  # only the green centre remains
