"""Every request field a user can set reaches the image: same seed, one field changed, and what comes back
changes as documented (a backend or parser that dropped or swapped a field would fail here).

One application on a real local Ray with the embedded model (random weights: it draws noise, but the noise
is a deterministic function of every input). Requests go one at a time, so no batching is involved and
the same request gives the same bytes; each variant is compared with a baseline request.
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.serve_cluster import TEST_SIZE, TEST_SIZE_TRANSPOSED, fast_embedded_args, local_serve

pytestmark = pytest.mark.ray

ARGS = fast_embedded_args(batch_size=1, max_steps=8)
BASE = {"prompt": "a red barn", "seed": 7, "steps": 4, "guidance_scale": 5.0}
#: Mean per-channel difference, in 0..255 levels, above which two images count as different. Identical
#: inputs give identical bytes; a changed input moved the mean by 2.7 or more in a trial of each field.
CHANGED = 1.0


@pytest.fixture(scope="module")
def client():
    with local_serve(ARGS, deployment_options={"ray_actor_options": {"num_cpus": 1}}) as url:
        with httpx.Client(base_url=url, timeout=120) as http:
            yield http


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def difference(first: Image.Image, second: Image.Image) -> float:
    assert first.size == second.size
    return float(np.abs(pixels(first) - pixels(second)).mean())


def imagine(client: httpx.Client, **changes) -> httpx.Response:
    response = client.get("/imagine", params={**BASE, **changes})
    assert response.status_code == 200, response.text
    return response


def generations(client: httpx.Client, **changes) -> dict:
    response = client.post("/v1/images/generations", json={**BASE, **changes})
    assert response.status_code == 200, response.text
    return response.json()


def b64_images(body: dict) -> list[Image.Image]:
    return [decode(base64.b64decode(item["b64_json"])) for item in body["data"]]


@pytest.fixture(scope="module")
def baseline(client) -> Image.Image:
    first, again = imagine(client), imagine(client)
    assert first.content == again.content  # the comparisons below rest on this
    return decode(first.content)


# --------------------------------------------------------------------------------------------------
# GET /imagine


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a blue boat"},
        {"negative_prompt": "blurry"},
        {"negative_prompt": ""},  # encoded, unlike an absent one (SDXL zeroes an absent negative prompt)
        {"seed": 8},
        {"steps": 3},
        {"steps": 6},
        {"guidance_scale": 1.0},
        {"guidance_scale": 9.0},
    ],
    ids=lambda change: "=".join(map(str, next(iter(change.items())))),
)
def test_imagine_field_changes_the_image(client, baseline, change):
    response = imagine(client, **change)
    assert difference(decode(response.content), baseline) > CHANGED


def test_negative_prompt_text_matters_not_only_its_presence(client):
    blurry = decode(imagine(client, negative_prompt="blurry").content)
    sharp = decode(imagine(client, negative_prompt="sharp focus").content)
    assert difference(blurry, sharp) > CHANGED


def test_imagine_width_and_height_choose_the_image_size_in_that_order(client, baseline):
    assert baseline.size == TEST_SIZE
    transposed = imagine(client, width=TEST_SIZE_TRANSPOSED[0], height=TEST_SIZE_TRANSPOSED[1])
    assert decode(transposed.content).size == TEST_SIZE_TRANSPOSED
    assert transposed.headers["X-Image-Size"] == f"{TEST_SIZE_TRANSPOSED[0]}x{TEST_SIZE_TRANSPOSED[1]}"


def test_imagine_echoes_what_it_used_in_its_headers(client):
    response = imagine(client, steps=3, guidance_scale=2.5, seed=99)
    assert (response.headers["X-Steps"], response.headers["X-Guidance-Scale"], response.headers["X-Seed"]) == (
        "3",
        "2.5",
        "99",
    )


@pytest.mark.parametrize(("output_format", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_imagine_output_format_encodes_the_same_picture(client, baseline, output_format, pil_format):
    image = decode(imagine(client, output_format=output_format).content)
    assert image.format == pil_format
    # Lossy formats change pixels a little; the picture is the seed's, not another one.
    assert difference(image, baseline) < 12


# --------------------------------------------------------------------------------------------------
# POST /v1/images/generations: the same fields, parsed from JSON, make the same images


def test_generations_with_every_shared_field_equal_imagine_with_the_same_fields(client):
    fields = {"prompt": "a lighthouse", "negative_prompt": "fog", "seed": 123, "steps": 3, "guidance_scale": 2.0}
    body = generations(client, **fields, size="96x128", output_format="png")
    (image,) = b64_images(body)
    single = decode(imagine(client, **fields, width=96, height=128).content)
    assert image.size == single.size == TEST_SIZE_TRANSPOSED
    assert difference(image, single) == 0
    assert (body["steps"], body["guidance_scale"], body["size"], body["data"][0]["seed"]) == (3, 2.0, "96x128", 123)


@pytest.mark.parametrize(
    "change",
    [{"prompt": "a blue boat"}, {"negative_prompt": "blurry"}, {"seed": 8}, {"steps": 6}, {"guidance_scale": 9.0}],
    ids=lambda change: next(iter(change)),
)
def test_generations_field_changes_the_image(client, baseline, change):
    (image,) = b64_images(generations(client, **change))
    assert difference(image, baseline) > CHANGED


def test_generations_n_makes_n_images_with_consecutive_seeds_each_its_own(client):
    body = generations(client, n=3, seed=40)
    images = b64_images(body)
    assert [item["seed"] for item in body["data"]] == [40, 41, 42]
    assert difference(images[0], images[1]) > CHANGED and difference(images[1], images[2]) > CHANGED
    alone = b64_images(generations(client, seed=41))[0]
    assert difference(images[1], alone) <= 2  # batched matrix products may round the last bit differently


def test_generations_size_and_output_format_shape_the_answer(client):
    body = generations(client, size="96x128", output_format="jpeg")
    (image,) = b64_images(body)
    assert (image.size, image.format, body["output_format"]) == (TEST_SIZE_TRANSPOSED, "JPEG", "jpeg")


def test_generations_ignores_model_and_user_as_documented(client, baseline):
    (image,) = b64_images(generations(client, model="dall-e-3", user="someone"))
    assert difference(image, baseline) == 0


def test_generations_refuses_url_responses_because_nothing_is_stored(client):
    response = client.post("/v1/images/generations", json={**BASE, "response_format": "url"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "response_format"
