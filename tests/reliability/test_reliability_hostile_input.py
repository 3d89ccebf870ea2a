"""Hostile input, generated: whatever a client sends, the answer is never a 5xx and the service stays up.

Hypothesis builds query strings and JSON bodies out of the API's own field names (and random ones)
paired with wrong types, huge and negative numbers, NaN/inf, control characters, invalid UTF-8,
duplicate keys and oversized values, and sends them over real HTTP to one embedded-model replica.
Every refusal must be a 4xx in the documented error shape; anything accepted must be a real image.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support.serve_cluster import (
    TEST_SIZE,
    TEST_SIZE_TRANSPOSED,
    api_application,
    fast_embedded_args,
    local_serve,
)

pytestmark = pytest.mark.ray

MAX_BODY_BYTES = 65536
SERVED_SIZES = {TEST_SIZE, TEST_SIZE_TRANSPOSED}
MAX_PROMPT_CHARS = 2000
TIMEOUT_S = 60.0

FIELDS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "width",
    "height",
    "output_format",
    "n",
    "size",
    "response_format",
    "quality",
    "style",
    "model",
    "user",
    "strength",
    "image",
    "mask",
    "image[]",
)

SPECIAL_STRINGS = (
    "",
    " ",
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-Infinity",
    "1e309",
    "-1e309",
    "1e-400",
    "-1",
    "-0",
    "0",
    "4294967295",
    "4294967296",
    "18446744073709551617",
    "9" * 400,
    "0x10",
    "1_000",
    "１２",
    "true",
    "null",
    "[]",
    "{}",
    "1.5",
    "128x96",
    "96x128",
    "128x128",
    "0x0",
    "128X96",
    "99999x99999",
    "png",
    "jpeg",
    "webp",
    "gif",
    "PNG",
    "b64_json",
    "url",
    "\x00",
    "\r\nX-Injected: 1",
    "\u202e",
    "\ud7ff",
    "a" * (MAX_PROMPT_CHARS + 1),
    "☃" * 800,
)

nasty_text = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    st.text(max_size=30),  # includes control characters and non-BMP code points
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(codec="ascii"), min_size=MAX_PROMPT_CHARS - 5, max_size=MAX_PROMPT_CHARS + 5),
)

#: Raw query values: text (UTF-8) or arbitrary bytes (mostly invalid UTF-8), percent-encoded.
query_value = st.one_of(nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=24))
query_key = st.one_of(st.sampled_from(FIELDS), st.text(max_size=10).map(lambda t: t.encode("utf-8", "surrogatepass")))


def _encode_pair(key, value: bytes) -> str:
    key_bytes = key.encode() if isinstance(key, str) else key
    return urllib.parse.quote_from_bytes(key_bytes, safe="") + "=" + urllib.parse.quote_from_bytes(value, safe="")


query_strings = st.lists(st.tuples(query_key, query_value), max_size=8).map(
    lambda pairs: "&".join(_encode_pair(k, v) for k, v in pairs)
)
# Half the time start from a valid prompt, so the other parameters are what gets judged.
imagine_queries = st.one_of(
    query_strings,
    st.tuples(nasty_text, query_strings).map(
        lambda pair: (
            "prompt=" + urllib.parse.quote(pair[0].encode("utf-8", "surrogatepass") or b"x", safe="") + "&" + pair[1]
        )
    ),
)

#: Integers no float can hold, and lone surrogates (JSON allows "\ud800" escapes; Python decodes them).
BEYOND_FLOATS = (10**400, -(10**400), 2**1100)
LONE_SURROGATES = ("\ud800", "a\udfff", "\udbff\ud800")

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from(BEYOND_FLOATS),
    st.sampled_from(LONE_SURROGATES),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _object_with_pairs(pairs: list[tuple[str, object]]) -> bytes:
    # Written by hand so keys may repeat and NaN/Infinity literals appear, as a careless client writes them.
    members = [f"{json.dumps(key)}: {json.dumps(value, allow_nan=True)}" for key, value in pairs]
    return ("{" + ", ".join(members) + "}").encode("utf-8", "surrogatepass")


json_pairs = st.lists(
    st.tuples(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8), st.sampled_from(LONE_SURROGATES)), json_value),
    max_size=8,
)
json_bodies = st.one_of(
    json_pairs.map(_object_with_pairs),
    st.tuples(nasty_text, json_pairs).map(lambda p: _object_with_pairs([("prompt", p[0] or "x"), *p[1]])),
    json_value.map(lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")),  # not an object
    st.binary(max_size=64),  # invalid UTF-8, truncated JSON, garbage
    json_pairs.map(_object_with_pairs).map(lambda b: b[: max(1, len(b) // 2)]),  # cut mid-document
)
content_types = st.one_of(
    st.just("application/json"),
    st.just("application/json; charset=utf-8"),
    st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "", "application/JSON", "multipart/form-data"]),
)


def _image_bytes(fmt: str, mode: str, width: int, height: int, frames: int) -> bytes:
    images = [Image.new(mode, (width, height), index * 40) for index in range(frames)]
    buffer = io.BytesIO()
    options = {"save_all": True, "append_images": images[1:]} if frames > 1 else {}
    try:
        images[0].save(buffer, format=fmt, **options)
    except (OSError, ValueError, KeyError):  # a mode this format cannot store: an RGB PNG instead
        buffer = io.BytesIO()
        images[0].convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


real_images = st.builds(
    _image_bytes,
    st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]),
    st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16"]),
    st.integers(1, 700),
    st.integers(1, 700),
    st.integers(1, 3),
)


def _corrupted(data: bytes, cut: float, flips: list[int]) -> bytes:
    damaged = bytearray(data[: max(1, int(len(data) * cut))])
    for position in flips:
        damaged[position % len(damaged)] ^= 0xFF
    return bytes(damaged)


#: Image bytes as a careless or hostile client uploads them: real images of every format, mode, size and
#: frame count, truncated or bit-flipped ones, and plain garbage.
upload_bytes = st.one_of(
    real_images,
    st.builds(_corrupted, real_images, st.floats(0.05, 1.0), st.lists(st.integers(0, 10**6), max_size=4)),
    st.binary(max_size=256),
)
multipart_parts = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(FIELDS), nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass"))),
        st.tuples(st.sampled_from(["image", "mask", "image[]", "prompt", "x"]), upload_bytes, st.just(True)),
    ),
    max_size=6,
)


def _multipart(parts: list[tuple], boundary: str) -> bytes:
    body = b""
    for part in parts:
        name, value = part[0], part[1]
        disposition = f'form-data; name="{name}"' + ('; filename="upload.png"' if len(part) == 3 else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


multipart_bodies = st.one_of(
    multipart_parts.map(lambda parts: _multipart(parts, "b0undary")),
    # Half the time a valid prompt and image, so the other parts are what gets judged.
    st.tuples(nasty_text, upload_bytes, multipart_parts).map(
        lambda p: _multipart(
            [("prompt", (p[0] or "x").encode("utf-8", "surrogatepass")), ("image", p[1], True), *p[2]], "b0undary"
        )
    ),
    multipart_parts.map(lambda parts: _multipart(parts, "b0undary")[:-7]),  # cut before the closing boundary
    st.binary(max_size=128),
)
multipart_types = st.sampled_from(
    [
        "multipart/form-data; boundary=b0undary",
        "multipart/form-data",
        "multipart/form-data; boundary=other",
        "application/json",
        "",
        'multipart/form-data; boundary="b0undary"',
    ]
)

HOSTILE_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


API_KEY = "rel-" + "k3y" * 8
KEYED_PREFIX = "/keyed"


@pytest.fixture(scope="module")
def api():
    # A second copy of the API, with an API key, shares the Ray cluster (one cluster per module).
    keyed = api_application(
        fast_embedded_args(api_key_env="SDXL_RELIABILITY_API_KEY", warmup=False),
        {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
        name="keyed",
        route_prefix=KEYED_PREFIX,
    )
    with local_serve(
        fast_embedded_args(max_body_bytes=MAX_BODY_BYTES, max_prompt_chars=MAX_PROMPT_CHARS),
        deployment_options={"num_replicas": 1, "ray_actor_options": {"num_cpus": 1}},
        extra_apps=[keyed],
        env={"SDXL_RELIABILITY_API_KEY": API_KEY},
    ) as url:
        yield url


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=TIMEOUT_S) as http:
        yield http


def assert_answer_is_sound(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what} -> {response.status_code}: {response.text[:300]}"
    if response.status_code == 200:
        return
    assert 400 <= response.status_code < 500, f"{what} -> {response.status_code}"
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and isinstance(error["code"], str)
    assert "param" in error


MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def assert_real_image(data: bytes, sizes: set[tuple[int, int]]) -> Image.Image:
    """The bytes decode fully, in one of the service's formats, at one of its sizes."""
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every pixel: a truncated or garbled body raises here
    assert image.format in MEDIA_TYPES and image.size in sizes, (image.format, image.size)
    return image


def assert_images_if_accepted(response: httpx.Response) -> None:
    """A 200 from an OpenAI-shaped route carries at least one image, and each one decodes."""
    if response.status_code == 200:
        data = response.json()["data"]
        assert data
        for item in data:
            assert_real_image(base64.b64decode(item["b64_json"], validate=True), SERVED_SIZES)


def assert_service_healthy(api: str, client: httpx.Client) -> None:
    health = client.get(f"{api}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    image = client.get(f"{api}/imagine", params={"prompt": "still alive"})
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


@given(query=imagine_queries)
@HOSTILE_SETTINGS
def test_no_query_string_gets_a_server_error(api, client, query):
    response = client.get(f"{api}/imagine?{query}")
    assert_answer_is_sound(response, f"GET /imagine?{query[:200]}")
    if response.status_code == 200:
        image = assert_real_image(response.content, SERVED_SIZES)
        assert response.headers["content-type"] == MEDIA_TYPES[image.format]


@given(body=json_bodies, content_type=content_types)
@HOSTILE_SETTINGS
def test_no_request_body_gets_a_server_error(api, client, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(f"{api}/v1/images/generations", content=body, headers=headers)
    assert_answer_is_sound(response, f"POST {content_type!r} {body[:200]!r}")
    assert_images_if_accepted(response)


@given(body=multipart_bodies, content_type=multipart_types)
@HOSTILE_SETTINGS
def test_no_upload_gets_a_server_error(api, client, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(f"{api}/v1/images/edits", content=body, headers=headers)
    assert_answer_is_sound(response, f"POST edits {content_type!r} {body[:120]!r}")
    assert_images_if_accepted(response)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            json.dumps({"prompt": "x" * (MAX_BODY_BYTES + 10)}).encode(), id="prompt-larger-than-the-body-limit"
        ),
        pytest.param(b"{" + b'"prompt": "a", ' * 200_000 + b'"n": 1}', id="3MB-of-duplicate-keys"),
        pytest.param(b"[" * 50_000 + b"]" * 50_000, id="deeply-nested-array"),
    ],
)
def test_enormous_bodies_are_refused_with_413(api, client, body):
    response = client.post(f"{api}/v1/images/generations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text[:300]
    assert_answer_is_sound(response, "enormous body")


def test_enormous_body_without_content_length_is_refused_with_413(api, client):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(64):
            yield b"y" * 4096
        yield b'"}'

    response = client.post(
        f"{api}/v1/images/generations", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text[:300]


def test_deep_nesting_within_the_size_limit_is_a_client_error(api, client):
    body = b"[" * 20_000 + b"]" * 20_000  # 40 kB: under the limit, deeper than any JSON parser's recursion
    response = client.post(f"{api}/v1/images/generations", content=body, headers={"Content-Type": "application/json"})
    assert_answer_is_sound(response, "deeply nested JSON")
    assert response.status_code == 400


def test_enormous_prompt_in_the_query_is_a_client_error(api, client):
    response = client.get(f"{api}/imagine", params={"prompt": "z" * 12_000})
    assert 400 <= response.status_code < 500, response.status_code


# Near misses of the real key: truncated, extended, re-cased, other schemes, smuggled separators.
# Only bytes a header may carry on the wire (HTTP clients refuse control characters and edge spaces).
header_chars = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f")
near_miss_tokens = st.one_of(
    st.integers(min_value=0, max_value=len(API_KEY) - 1).map(lambda n: API_KEY[:n]),
    st.text(alphabet=header_chars, min_size=1, max_size=4).map(lambda t: API_KEY + t),
    st.text(alphabet=header_chars, min_size=1, max_size=4).map(lambda t: t + API_KEY),
    st.just(API_KEY.upper()),
    st.text(alphabet=header_chars, max_size=60),
    st.just(API_KEY + "," + API_KEY),
    st.just(API_KEY.replace("k", "\u00ea")),
)
authorization_headers = st.one_of(
    near_miss_tokens.map(lambda t: "Bearer " + t),
    st.tuples(
        st.sampled_from(["Basic", "Token", "Bearer:", "Digest", "Bearer=", "Bearer" + API_KEY]), st.just(API_KEY)
    ).map(" ".join),
    near_miss_tokens,
).map(lambda header: header.strip(" \t"))


@given(header=authorization_headers)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_near_miss_authorization_header_unlocks_generation(api, client, header):
    response = client.get(
        f"{api.root}{KEYED_PREFIX}/imagine",
        params={"prompt": "locked"},
        headers={"Authorization": header.encode("latin-1")},
    )
    assert response.status_code == 401, f"{header!r} -> {response.status_code}"
    assert response.headers.get("www-authenticate", "").startswith("Bearer")
    assert API_KEY not in response.text


def test_the_exact_key_unlocks_generation_and_health_stays_open(api, client):
    keyed = f"{api.root}{KEYED_PREFIX}"
    assert client.get(f"{keyed}/healthz").status_code == 200
    response = client.get(
        f"{keyed}/imagine", params={"prompt": "unlocked"}, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")


def test_service_stays_healthy_after_the_hostile_input(api, client):
    assert_service_healthy(api, client)
