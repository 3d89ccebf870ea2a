"""Uploaded images, hostile until decoded: reading a bounded multipart body, then turning its files into the
RGB image and the inpainting mask a pipeline takes, or a 4xx that says which rule was broken.

Rules, in the order they are checked:

* the body: ``multipart/form-data`` with a boundary, at most ``max_upload_bytes`` (counted while reading,
  chunked bodies too), at most :data:`MAX_PARTS` parts, each text field at most :data:`MAX_FIELD_BYTES`,
  no field or file given twice;
* each file: PNG, JPEG or WebP as its bytes say (the file name and declared type are not trusted), one
  frame, at most ``max_upload_pixels`` pixels by its header, before any pixel is decoded (and Pillow's own
  decompression-bomb limit set to the same budget), then decoded in full (a truncated or corrupt file
  fails here), EXIF orientation applied;
* the image: every mode converted to RGB (transparency composited on white, 16-bit scaled to 8-bit);
* the mask (OpenAI's rule): an alpha channel, the image's size; fully transparent pixels mark where to
  re-draw.

Pure Python (Pillow, Starlette), no model: unit-testable without a replica.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from app.http import ApiError

#: Most parts (fields and files) a multipart body may have: the route has under twenty fields.
MAX_PARTS = 32
#: Largest text field: a prompt is at most 20000 characters (4 bytes each in UTF-8).
MAX_FIELD_BYTES = 80 * 1024
#: The file fields; every other part must be text.
FILE_FIELDS = ("image", "mask")
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}


def invalid(param: str | None, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class Upload:
    """A multipart body: its text fields, and the raw bytes of each file field."""

    fields: dict[str, str]
    files: dict[str, bytes]


async def read_multipart(request: Request, limit: int) -> Upload:
    """Read and parse a ``multipart/form-data`` body of at most ``limit`` bytes."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise ApiError(
            415,
            f"Content-Type must be multipart/form-data, not {media_type or 'missing'!r}",
            code="unsupported_media_type",
        )
    if "boundary=" not in content_type.lower():
        raise invalid(None, "the multipart Content-Type has no boundary", "invalid_multipart")
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, f"request body exceeds {limit} bytes", code="body_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():  # counted while reading: chunked bodies declare no length
        body += chunk
        if len(body) > limit:
            raise too_large

    async def replay():
        yield bytes(body)

    parser = MultiPartParser(
        request.headers, replay(), max_files=len(FILE_FIELDS), max_fields=MAX_PARTS, max_part_size=MAX_FIELD_BYTES
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise invalid(
            None, f"the multipart body is malformed or over its limits: {error.message}", "invalid_multipart"
        ) from None
    return await _split(form)


async def _split(form: FormData) -> Upload:
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for name, value in form.multi_items():
        # OpenAI's SDK sends a list of images as "image[]"; this service edits exactly one.
        key = "image" if name == "image[]" else name
        if key in fields or key in files:
            raise invalid(
                key[:64], f"'{key}' is given more than once (this service edits one image)", "duplicate_parameter"
            )
        if isinstance(value, UploadFile):
            if key not in FILE_FIELDS:
                raise invalid(key[:64], f"'{key}' must be a text field, not a file", "invalid_type")
            files[key] = await value.read()
            await value.close()
        else:
            if key in FILE_FIELDS:
                raise invalid(key, f"'{key}' must be a file (an image upload), not text", "invalid_type")
            fields[key] = value
    return Upload(fields, files)


def open_image(data: bytes, param: str, max_pixels: int) -> Image.Image:
    """Decode one uploaded file as a single-frame PNG, JPEG or WebP within ``max_pixels`` (EXIF-rotated)."""
    if not data:
        raise invalid(param, f"'{param}' is an empty file")
    # Image.open reads only the header; the size check below refuses a large image before any pixel is
    # decoded. Pillow's own bomb check (its process-wide default limit) stays as it is: changing that
    # global would refuse large images everywhere else in the process, e.g. a PNG the UI or a test opens.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise invalid(param, f"'{param}' has more than {max_pixels} pixels", "image_too_large") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for bytes that are no image it knows
        raise invalid(param, f"'{param}' is not a PNG, JPEG or WebP image", "unsupported_image") from None
    if image.format not in ACCEPTED_FORMATS:
        raise invalid(
            param, f"'{param}' is {image.format or 'an unknown format'}; send PNG, JPEG or WebP", "unsupported_image"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise invalid(param, f"'{param}' is {width}x{height}, more than {max_pixels} pixels", "image_too_large")
    if getattr(image, "n_frames", 1) > 1:
        raise invalid(
            param, f"'{param}' is animated ({image.n_frames} frames); send a single image", "unsupported_image"
        )
    try:
        image.load()
    except Exception:  # noqa: BLE001 - truncated or corrupt data surfaces as OSError, SyntaxError, ValueError...
        raise invalid(
            param, f"'{param}' is truncated or corrupt: it could not be decoded", "unsupported_image"
        ) from None
    return ImageOps.exif_transpose(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded mode as 8-bit RGB: transparency onto white, 16/32-bit greyscale scaled down."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.convert("I")
        high = max(image.getextrema()[1], 1)
        image = image.point(lambda value: value * 255 / high).convert("L")
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def mask_from(image: Image.Image, target: Image.Image) -> Image.Image:
    """The inpainting mask ("L", 255 = re-draw) from an uploaded mask under OpenAI's rule."""
    if image.size != target.size:
        raise invalid(
            "mask",
            f"'mask' is {image.size[0]}x{image.size[1]} but 'image' is {target.size[0]}x"
            f"{target.size[1]}: OpenAI's rule is a mask of the image's size",
        )
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        raise invalid(
            "mask",
            f"'mask' has no alpha channel (mode {image.mode}): OpenAI's rule is that fully "
            "transparent pixels mark where to edit, so send a PNG or WebP with transparency",
        )
    alpha = image.convert("RGBA").getchannel("A")
    return alpha.point(lambda value: 255 if value == 0 else 0)


def fit(image: Image.Image, width: int, height: int, resample: int = Image.Resampling.LANCZOS) -> Image.Image:
    """Scale ``image`` to cover ``width`` x ``height`` and crop the centre: no stretching, no borders."""
    return ImageOps.fit(image, (width, height), method=resample, centering=(0.5, 0.5))
