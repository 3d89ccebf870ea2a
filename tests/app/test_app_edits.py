"""POST /v1/images/edits over HTTP on a real local Ray Serve with the embedded model: the OpenAI SDK's
``images.edit`` works unchanged (img2img without a mask, inpainting with one), every edit field changes
the image, and every malformed upload is a 4xx in the JSON error shape while the replica stays healthy.

The embedded model has random weights: it draws noise, so these tests compare images with each other
(same inputs and seed: same bytes; one input changed: another image), never with a picture.
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from openai import OpenAI
from PIL import Image

from tests.support.serve_cluster import TEST_SIZE, TEST_SIZE_TRANSPOSED, fast_embedded_args, local_serve

pytestmark = pytest.mark.ray

MAX_UPLOAD_BYTES = 256 * 1024
MAX_UPLOAD_PIXELS = 512 * 512
ARGS = fast_embedded_args(max_upload_bytes=MAX_UPLOAD_BYTES, max_upload_pixels=MAX_UPLOAD_PIXELS, max_steps=8)
CHANGED = 1.0  # mean difference in 0..255 levels: identical inputs give identical bytes


@pytest.fixture(scope="module")
def api():
    with local_serve(ARGS, deployment_options={"ray_actor_options": {"num_cpus": 1}}) as url:
        yield url


@pytest.fixture(scope="module")
def client(api):
    with httpx.Client(base_url=api, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def sdk(api):
    return OpenAI(base_url=api + "/v1", api_key="unused", max_retries=0, timeout=120)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def photo(size=(160, 120)) -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def mask_png(size=(160, 120), box=(40, 30, 120, 90)) -> bytes:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)  # fully transparent: re-draw here
    return png(mask)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def difference(first: Image.Image, second: Image.Image) -> float:
    return float(np.abs(pixels(first) - pixels(second)).mean())


def decoded(item) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(item.b64_json if hasattr(item, "b64_json") else item["b64_json"])))
    image.load()
    return image


def edit(client: httpx.Client, mask: bytes | None = None, image: bytes | None = None, **fields) -> httpx.Response:
    files = {"image": ("input.png", image if image is not None else png(photo()), "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    data = {"prompt": "a red barn", "seed": "7", "steps": "4", **{k: str(v) for k, v in fields.items()}}
    return client.post("/v1/images/edits", data=data, files=files)


def ok_images(response: httpx.Response) -> list[Image.Image]:
    assert response.status_code == 200, response.text
    return [decoded(item) for item in response.json()["data"]]


def assert_error(response: httpx.Response, status: int, param: str | None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
    if code:
        assert error["code"] == code, error
    return error


# --------------------------------------------------------------------------------------------------
# The OpenAI SDK, unchanged


def test_the_openai_sdk_edits_an_image_without_a_mask(sdk):
    result = sdk.images.edit(
        image=("in.png", png(photo()), "image/png"),
        prompt="a red barn",
        size="128x96",
        response_format="b64_json",
        extra_body={"seed": 7, "steps": 4},
    )
    (image,) = [decoded(item) for item in result.data]
    assert image.size == TEST_SIZE and image.format == "PNG"


def test_the_openai_sdk_inpaints_with_a_mask_and_n_images(sdk):
    result = sdk.images.edit(
        image=("in.png", png(photo()), "image/png"),
        mask=("mask.png", mask_png(), "image/png"),
        prompt="a red barn",
        n=2,
        size="96x128",
        extra_body={"seed": 7, "steps": 4},
    )
    images = [decoded(item) for item in result.data]
    assert [image.size for image in images] == [TEST_SIZE_TRANSPOSED] * 2
    assert difference(images[0], images[1]) > CHANGED  # seeds 7 and 8


# --------------------------------------------------------------------------------------------------
# What each field does


def test_the_same_edit_gives_the_same_bytes(client):
    first, again = edit(client, mask=mask_png()), edit(client, mask=mask_png())
    assert first.json()["data"][0]["b64_json"] == again.json()["data"][0]["b64_json"]


@pytest.mark.parametrize(
    "change",
    [
        {"strength": 0.5},
        {"prompt": "a blue boat"},
        {"negative_prompt": "blurry"},
        {"seed": 8},
        {"guidance_scale": 9},
        {"steps": 6},
    ],
    ids=lambda change: next(iter(change)),
)
def test_each_edit_field_changes_the_result(client, change):
    (baseline,) = ok_images(edit(client, strength=0.9))
    (changed,) = ok_images(edit(client, **{"strength": 0.9, **change}))
    assert difference(baseline, changed) > CHANGED


def test_the_input_image_and_the_mask_change_the_result(client):
    (base,) = ok_images(edit(client))
    (other_input,) = ok_images(edit(client, image=png(photo().rotate(180))))
    (masked,) = ok_images(edit(client, mask=mask_png()))
    (other_mask,) = ok_images(edit(client, mask=mask_png(box=(0, 0, 60, 120))))
    assert difference(base, other_input) > CHANGED
    assert difference(base, masked) > CHANGED  # inpainting is another pipeline than img2img
    assert difference(masked, other_mask) > CHANGED


def test_an_edit_answers_in_the_generations_shape(client):
    body = edit(client, output_format="jpeg", size="96x128", n=2).json()
    assert body["output_format"] == "jpeg" and body["size"] == "96x128" and body["steps"] == 4
    assert [item["seed"] for item in body["data"]] == [7, 8]
    assert all(decoded(item).format == "JPEG" for item in body["data"])


def test_info_publishes_the_edit_route_and_its_tasks(client):
    info = client.get("/info").json()
    assert info["tasks"] == ["generate", "img2img", "inpaint"]
    edits = info["request_schema"]["images_edits"]
    assert edits["required"][:2] == ["image", "prompt"]
    assert edits["properties"]["strength"]["exclusiveMinimum"] == 0 and edits["properties"]["strength"]["maximum"] == 1
    assert edits["properties"]["mask"]["format"] == "binary"


# --------------------------------------------------------------------------------------------------
# Refusals: always a 4xx naming the problem


def test_an_upload_over_the_limit_is_a_413_declared_or_chunked(client):
    big = photo((512, 512)).tobytes() + b"x" * MAX_UPLOAD_BYTES
    response = client.post("/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.png", big, "image/png")})
    assert_error(response, 413, None, "body_too_large")

    def chunks():
        for _ in range(MAX_UPLOAD_BYTES // 4096 + 2):
            yield b"y" * 4096

    response = client.post(
        "/v1/images/edits", content=chunks(), headers={"content-type": "multipart/form-data; boundary=abc"}
    )
    assert_error(response, 413, None, "body_too_large")


@pytest.mark.parametrize(
    ("headers", "content", "status", "code"),
    [
        ({"content-type": "application/json"}, b"{}", 415, "unsupported_media_type"),
        ({"content-type": "multipart/form-data"}, b"--x\r\n", 400, "invalid_multipart"),
        ({"content-type": "multipart/form-data; boundary=x"}, b"garbage without parts", 400, None),
    ],
    ids=["json", "no-boundary", "garbage"],
)
def test_a_body_that_is_not_a_sound_multipart_form_is_refused(client, headers, content, status, code):
    response = client.post("/v1/images/edits", content=content, headers=headers)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["error"]["code"] == code


def test_field_and_file_mistakes_are_400s_naming_the_field(client):
    image = ("a.png", png(photo()), "image/png")
    # (None, value): a plain text part, so that the body is multipart without any file.
    assert_error(client.post("/v1/images/edits", files={"prompt": (None, "x")}), 400, "image", "missing_value")
    assert_error(client.post("/v1/images/edits", files={"image": image}), 400, "prompt", "missing_value")
    assert_error(
        client.post(
            "/v1/images/edits",
            data={"prompt": "x", "image": "not a file"},
            files={"mask": ("m.png", mask_png(), "image/png")},
        ),
        400,
        "image",
        "invalid_type",
    )
    assert_error(
        client.post("/v1/images/edits", data={"prompt": "x", "quality": "hd"}, files={"image": image}),
        400,
        "quality",
        "unsupported_parameter",
    )
    duplicate = [("image", image), ("image", image)]
    assert_error(
        client.post("/v1/images/edits", data={"prompt": "x"}, files=duplicate), 400, "image", "duplicate_parameter"
    )
    assert_error(edit(client, strength=0), 400, "strength", "out_of_range")
    assert_error(edit(client, strength=1.5), 400, "strength", "out_of_range")
    assert_error(edit(client, strength=0.1, steps=4), 400, "strength", "out_of_range")  # 0.4 of a step
    assert_error(edit(client, size="64x64"), 400, "size", "unsupported_value")


def test_image_mistakes_are_400s_that_say_what_is_wrong(client):
    gif = io.BytesIO()
    Image.new("RGB", (32, 32)).save(gif, format="GIF")
    assert "GIF" in assert_error(edit(client, image=gif.getvalue()), 400, "image", "unsupported_image")["message"]
    whole = png(photo())
    assert "truncated" in assert_error(edit(client, image=whole[: len(whole) // 2]), 400, "image")["message"]
    huge = Image.new("RGB", (600, 600))  # 360000 pixels > 512 x 512, yet a small file
    assert_error(edit(client, image=png(huge)), 400, "image", "image_too_large")
    no_alpha = png(Image.new("RGB", (160, 120)))
    assert "alpha" in assert_error(edit(client, mask=no_alpha), 400, "mask")["message"]
    assert "image's size" in assert_error(edit(client, mask=mask_png(size=(80, 60))), 400, "mask")["message"]


def test_the_replica_is_healthy_after_the_refusals(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert ok_images(edit(client, mask=mask_png()))[0].size == TEST_SIZE
