"""The API over HTTP against a real local Ray Serve running the embedded model (one Ray for the module).

Three copies of the application run side by side, deployed from serveConfigV2-shaped configs as the
chart does: ``/serve`` (the API under test), ``/guarded`` (an API key required, two requests in the
replica and a queue of one, for authentication, overload and event-loop behaviour) and ``/patient``
(the longest batch wait the args allow, for when batching waits and when it must not).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.serve_cluster import (
    TEST_SIZE,
    TEST_SIZE_TRANSPOSED,
    api_application,
    deploy_config,
    fast_embedded_args,
    local_serve,
)

pytestmark = pytest.mark.ray

README_PROMPT = "an astronaut is dancing on green grass, sunlit"
API_KEY = "test-key-4f1c"  # not a secret: a throwaway value for this module's cluster only
MAX_PROMPT_CHARS = 200
SMALL_REPLICA = {"ray_actor_options": {"num_cpus": 0.5}}

API_ARGS = fast_embedded_args(max_prompt_chars=MAX_PROMPT_CHARS, max_body_bytes=4096, max_images_per_request=4)
GUARDED_ARGS = fast_embedded_args(api_key_env="SDXL_TEST_API_KEY", max_steps=400, batch_size=1, warmup=False)
# A replica that works on one request while holding one more; Serve's proxy queues one more.
GUARDED_OPTIONS = {"max_ongoing_requests": 2, "max_queued_requests": 1, **SMALL_REPLICA}
PATIENT_WAIT_S = 2.0  # AppArgs' largest batch_wait_timeout_s
PATIENT_ARGS = fast_embedded_args(batch_size=4, batch_wait_timeout_s=PATIENT_WAIT_S, warmup=False)
PATIENT_OPTIONS = {"max_ongoing_requests": 8, **SMALL_REPLICA}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def cluster():
    extra_apps = [
        api_application(GUARDED_ARGS, GUARDED_OPTIONS, name="guarded", route_prefix="/guarded"),
        api_application(PATIENT_ARGS, PATIENT_OPTIONS, name="patient", route_prefix="/patient"),
    ]
    with local_serve(API_ARGS, extra_apps=extra_apps, num_cpus=2, env={"SDXL_TEST_API_KEY": API_KEY}) as url:
        yield url


@pytest.fixture(scope="module")
def client(cluster):
    with httpx.Client(base_url=cluster, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def root(cluster):
    with httpx.Client(base_url=cluster.root, timeout=120) as http:
        yield http


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(decode(data).convert("RGB"), dtype=np.int16)


def assert_error(response: httpx.Response, status: int, param: str | None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    assert error["message"]
    if code:
        assert error["code"] == code, error
    return error


# --------------------------------------------------------------------------------------------------
# Happy paths


def test_readme_curl_returns_a_png_that_decodes(client):
    response = client.get("/imagine", params={"prompt": README_PROMPT})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = decode(response.content)
    assert image.format == "PNG" and image.size == TEST_SIZE
    assert 0 <= int(response.headers["X-Seed"]) < 2**32
    assert response.headers["X-Image-Size"] == "128x96"
    assert response.headers["X-Steps"] == str(API_ARGS["default_steps"])
    assert float(response.headers["X-Guidance-Scale"]) == 5.0
    assert int(response.headers["X-Generation-Time-Ms"]) > 0


def test_same_seed_gives_identical_image_bytes(client):
    params = {"prompt": README_PROMPT, "seed": 1234}
    first, second = client.get("/imagine", params=params), client.get("/imagine", params=params)
    assert first.status_code == second.status_code == 200
    assert first.headers["X-Seed"] == "1234"
    assert first.content == second.content


def test_different_seeds_give_different_images(client):
    images = [client.get("/imagine", params={"prompt": README_PROMPT, "seed": seed}).content for seed in (1, 2)]
    assert np.abs(pixels(images[0]) - pixels(images[1])).mean() > 5


def test_query_chooses_steps_guidance_and_a_configured_size(client):
    response = client.get(
        "/imagine",
        params={
            "prompt": "a red barn",
            "negative_prompt": "blurry",
            "steps": 3,
            "guidance_scale": 1.5,
            "width": 96,
            "height": 128,
            "seed": 7,
        },
    )
    assert response.status_code == 200, response.text
    assert decode(response.content).size == TEST_SIZE_TRANSPOSED
    assert response.headers["X-Steps"] == "3"
    assert response.headers["X-Guidance-Scale"] == "1.5"
    assert response.headers["X-Image-Size"] == "96x128"


@pytest.mark.parametrize(
    "output_format, pil_format, media_type",
    [("jpeg", "JPEG", "image/jpeg"), ("webp", "WEBP", "image/webp"), ("png", "PNG", "image/png")],
)
def test_output_format_selects_the_encoding(client, output_format, pil_format, media_type):
    response = client.get("/imagine", params={"prompt": "a lighthouse", "seed": 5, "output_format": output_format})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert decode(response.content).format == pil_format


def test_sixteen_concurrent_requests_all_succeed_each_with_its_own_seed(client):
    seeds = list(range(100, 116))

    def fetch(seed):
        return client.get("/imagine", params={"prompt": f"a castle number {seed}", "seed": seed})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(fetch, seeds))
    assert [r.status_code for r in responses] == [200] * 16
    assert [int(r.headers["X-Seed"]) for r in responses] == seeds
    images = [pixels(r.content) for r in responses]
    assert all(image.shape == (TEST_SIZE[1], TEST_SIZE[0], 3) for image in images)
    # Batched or not, each request keeps its own seed: no two images alike.
    assert min(np.abs(images[i] - images[i + 1]).mean() for i in range(15)) > 5


def test_a_batched_image_matches_the_same_seed_rendered_alone(client):
    # Concurrent requests share pipeline calls; each still gets its seed's image (batched matrix
    # products may round the last bit differently, hence a tolerance of one intensity level... or two).
    alone = pixels(client.get("/imagine", params={"prompt": "a fox", "seed": 77}).content)
    with ThreadPoolExecutor(4) as pool:
        together = list(
            pool.map(lambda seed: client.get("/imagine", params={"prompt": "a fox", "seed": seed}), [75, 76, 77, 78])
        )
    assert all(r.status_code == 200 for r in together)
    assert np.abs(pixels(together[2].content) - alone).max() <= 2


def test_a_request_to_an_idle_replica_does_not_wait_for_batch_partners(root):
    response = root.get("/patient/imagine", params={"prompt": "alone", "seed": 2})
    assert response.status_code == 200, response.text
    assert response.headers["X-Batch-Size"] == "1"
    # The replica's own clock, from arrival to the pipeline call: waiting for partners would have added
    # the whole batch_wait_timeout_s (2 s) here, however slow or loaded the machine is otherwise.
    assert int(response.headers["X-Queue-Wait-Ms"]) < PATIENT_WAIT_S * 1000 / 2


def test_requests_arriving_while_the_pipeline_is_busy_share_a_pipeline_call(root):
    seeds = list(range(40, 48))
    with ThreadPoolExecutor(len(seeds)) as pool:
        responses = list(
            pool.map(lambda seed: root.get("/patient/imagine", params={"prompt": "a crowd", "seed": seed}), seeds)
        )
    assert [r.status_code for r in responses] == [200] * len(seeds)
    batch_sizes = [int(r.headers["X-Batch-Size"]) for r in responses]
    assert max(batch_sizes) > 1 and max(batch_sizes) <= PATIENT_ARGS["batch_size"], batch_sizes
    assert [int(r.headers["X-Seed"]) for r in responses] == seeds


def test_openai_route_returns_n_images_with_consecutive_seeds(client):
    response = client.post(
        "/v1/images/generations",
        json={
            "model": "sdxl",
            "prompt": README_PROMPT,
            "n": 2,
            "size": "96x128",
            "seed": 10,
            "response_format": "b64_json",
            "steps": 3,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert abs(body["created"] - time.time()) < 300
    assert [item["seed"] for item in body["data"]] == [10, 11]
    images = [base64.b64decode(item["b64_json"]) for item in body["data"]]
    assert all(decode(data).size == TEST_SIZE_TRANSPOSED and decode(data).format == "PNG" for data in images)
    # Image i uses seed + i: the second equals GET /imagine with seed 11 and the same settings.
    single = client.get(
        "/imagine", params={"prompt": README_PROMPT, "seed": 11, "width": 96, "height": 128, "steps": 3}
    )
    assert np.abs(pixels(images[1]) - pixels(single.content)).max() <= 2


def test_info_publishes_sizes_and_each_routes_request_schema(client):
    info = client.get("/info").json()
    assert info["backend"] == "cpu" and info["model_id"] == "embedded"
    assert info["image_sizes"] == ["128x96", "96x128"] and info["default_size"] == "128x96"
    assert info["auth_required"] is False
    imagine = info["request_schema"]["imagine"]
    assert imagine["required"] == ["prompt"] and imagine["additionalProperties"] is False
    assert imagine["properties"]["prompt"]["maxLength"] == MAX_PROMPT_CHARS
    assert imagine["properties"]["steps"] == {
        "type": "integer",
        "description": imagine["properties"]["steps"]["description"],
        "minimum": 1,
        "maximum": API_ARGS["max_steps"],
        "default": API_ARGS["default_steps"],
    }
    generations = info["request_schema"]["images_generations"]["properties"]
    assert generations["size"]["enum"] == ["128x96", "96x128"]
    assert generations["n"]["maximum"] == API_ARGS["max_images_per_request"]
    assert "exclusiveMinimum" not in generations["guidance_scale"]  # the cpu backend adds no rule of its own


def test_healthz_reports_a_loaded_model(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_head_on_healthz_answers_the_status_without_a_body(client):
    response = client.head("/healthz")
    assert response.status_code == 200 and response.content == b""


# --------------------------------------------------------------------------------------------------
# Bad input: always its 4xx with the JSON error naming the field, never a 5xx


BAD_QUERIES = [
    ({}, "prompt", "missing_value"),
    ({"prompt": ""}, "prompt", "missing_value"),
    ({"prompt": "   "}, "prompt", "missing_value"),
    ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt", "too_long"),
    ({"prompt": "ok", "negative_prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "negative_prompt", "too_long"),
    ({"prompt": "ok", "steps": 0}, "steps", "out_of_range"),
    ({"prompt": "ok", "steps": 51}, "steps", "out_of_range"),
    ({"prompt": "ok", "steps": "many"}, "steps", "invalid_type"),
    ({"prompt": "ok", "steps": "2.5"}, "steps", "invalid_type"),
    ({"prompt": "ok", "guidance_scale": "nan"}, "guidance_scale", "invalid_value"),
    ({"prompt": "ok", "guidance_scale": "inf"}, "guidance_scale", "invalid_value"),
    ({"prompt": "ok", "guidance_scale": -1}, "guidance_scale", "out_of_range"),
    ({"prompt": "ok", "guidance_scale": 21}, "guidance_scale", "out_of_range"),
    ({"prompt": "ok", "seed": -1}, "seed", "out_of_range"),
    ({"prompt": "ok", "seed": 2**32}, "seed", "out_of_range"),
    ({"prompt": "ok", "steps": "9" * 400}, "steps", "out_of_range"),
    ({"prompt": "ok", "steps": "1_0"}, "steps", "invalid_type"),
    ({"prompt": "ok", "width": 4096}, "width", "out_of_range"),
    ({"prompt": "ok", "width": 100, "height": 100}, "width", "unsupported_value"),
    ({"prompt": "ok", "height": 112}, "height", "unsupported_value"),
    ({"prompt": "ok", "width": 96, "height": 96}, "width", "unsupported_value"),
    ({"prompt": "ok", "output_format": "gif"}, "output_format", "unsupported_value"),
    ({"prompt": "ok", "sampler": "ddim"}, "sampler", "unknown_parameter"),
]


@pytest.mark.parametrize("params, param, code", BAD_QUERIES, ids=[f"{p}:{c}" for _, p, c in BAD_QUERIES])
def test_bad_imagine_query_is_a_400_naming_the_field(client, params, param, code):
    assert_error(client.get("/imagine", params=params), 400, param, code)


def test_repeated_query_parameter_is_a_400(client):
    assert_error(client.get("/imagine?prompt=a&prompt=b"), 400, "prompt", "duplicate_parameter")


BAD_BODIES = [
    ({"n": 1}, "prompt", "missing_value"),
    ({"prompt": 42}, "prompt", "invalid_type"),
    ({"prompt": "ok", "quality": "hd"}, "quality", "unsupported_parameter"),
    ({"prompt": "ok", "style": "vivid"}, "style", "unsupported_parameter"),
    ({"prompt": "ok", "response_format": "url"}, "response_format", "unsupported_value"),
    ({"prompt": "ok", "n": 0}, "n", "out_of_range"),
    ({"prompt": "ok", "n": 5}, "n", "out_of_range"),
    ({"prompt": "ok", "n": 1.5}, "n", "invalid_type"),
    ({"prompt": "ok", "size": "1024x1024"}, "size", "unsupported_value"),
    ({"prompt": "ok", "seed": True}, "seed", "invalid_type"),
    ({"prompt": "ok", "steps": "3"}, "steps", "invalid_type"),
    ({"prompt": "ok", "model": 3}, "model", "invalid_type"),
    ({"prompt": "ok", "seed": 10**400}, "seed", "out_of_range"),
    ({"prompt": "ok", "guidance_scale": 10**400}, "guidance_scale", "out_of_range"),
]


@pytest.mark.parametrize(
    "content, param", [(b'{"prompt": "ok", "\\ud800": 1}', "\ud800"), (b'{"prompt": "a \\udfff fox"}', "prompt")]
)
def test_lone_surrogates_from_json_escapes_are_a_400(client, content, param):
    response = client.post("/v1/images/generations", content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, param)


@pytest.mark.parametrize("body, param, code", BAD_BODIES, ids=[f"{p}:{c}" for _, p, c in BAD_BODIES])
def test_bad_openai_body_is_a_400_naming_the_field(client, body, param, code):
    assert_error(client.post("/v1/images/generations", json=body), 400, param, code)


def test_nan_in_json_is_a_400_on_guidance_scale(client):
    # Python's json accepts the NaN literal; the service must still refuse it.
    content = b'{"prompt": "ok", "guidance_scale": NaN}'
    response = client.post("/v1/images/generations", content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, "guidance_scale", "invalid_value")


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_json_is_a_400(client, content):
    response = client.post("/v1/images/generations", content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, None)


def test_body_over_the_limit_is_a_413(client):
    body = json.dumps({"prompt": "x" * 5000}).encode()
    response = client.post("/v1/images/generations", content=body, headers={"content-type": "application/json"})
    assert_error(response, 413, None, "body_too_large")


def test_chunked_body_over_the_limit_is_a_413(client):
    # No Content-Length to trust: the limit is enforced while reading.
    chunks = (b'{"prompt": "' + b"x" * 1000 for _ in range(6))
    response = client.post("/v1/images/generations", content=chunks, headers={"content-type": "application/json"})
    assert_error(response, 413, None, "body_too_large")


def test_wrong_content_type_is_a_415(client):
    response = client.post(
        "/v1/images/generations", content=b"prompt=ok", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert_error(response, 415, None, "unsupported_media_type")


def test_unknown_route_is_a_404(client):
    assert_error(client.get("/imagines"), 404, None, "not_found")


@pytest.mark.parametrize(
    "method, path, allow",
    [("POST", "/imagine", "GET"), ("GET", "/v1/images/generations", "POST"), ("DELETE", "/healthz", "GET, HEAD")],
)
def test_wrong_method_is_a_405_with_allow(client, method, path, allow):
    response = client.request(method, path)
    assert_error(response, 405, None, "method_not_allowed")
    assert response.headers["allow"] == allow


def test_service_answers_normally_after_bad_input(client):
    for params, _, _ in BAD_QUERIES:
        assert client.get("/imagine", params=params).status_code < 500
    for body, _, _ in BAD_BODIES:
        assert client.post("/v1/images/generations", json=body).status_code < 500
    for method, path in [("POST", "/imagine"), ("GET", "/nowhere"), ("PUT", "/healthz")]:
        assert client.request(method, path).status_code < 500
    assert (
        client.post(
            "/v1/images/generations", content=b"x" * 5000, headers={"content-type": "application/json"}
        ).status_code
        == 413
    )
    assert client.get("/healthz").status_code == 200
    response = client.get("/imagine", params={"prompt": README_PROMPT, "seed": 1})
    assert response.status_code == 200
    assert decode(response.content).size == TEST_SIZE


# --------------------------------------------------------------------------------------------------
# API key (the /guarded copy)


def test_generation_without_the_api_key_is_a_401_with_www_authenticate(root):
    response = root.get("/guarded/imagine", params={"prompt": "ok"})
    assert_error(response, 401, None, "invalid_api_key")
    assert response.headers["www-authenticate"] == "Bearer"


def test_generation_with_a_wrong_api_key_is_a_401(root):
    for header in ("Bearer wrong", "Basic " + API_KEY, API_KEY, "Bearer " + API_KEY + "x"):
        response = root.post("/guarded/v1/images/generations", json={"prompt": "ok"}, headers={"Authorization": header})
        assert_error(response, 401, None, "invalid_api_key")


def test_generation_with_the_api_key_succeeds(root):
    response = root.get("/guarded/imagine", params={"prompt": "ok", "seed": 3}, headers=AUTH)
    assert response.status_code == 200
    assert decode(response.content).format == "PNG"


def test_health_and_info_stay_open_when_a_key_is_required(root):
    assert root.get("/guarded/healthz").status_code == 200
    info = root.get("/guarded/info")
    assert info.status_code == 200 and info.json()["auth_required"] is True


# --------------------------------------------------------------------------------------------------
# The /guarded copy: event loop and overload


def slow_request(http: httpx.Client, steps: int = 400):
    return http.get("/guarded/imagine", params={"prompt": "slow", "steps": steps, "seed": 1}, headers=AUTH)


def test_health_answers_while_an_image_renders(root):
    results = []
    worker = threading.Thread(target=lambda: results.append(slow_request(root)))
    worker.start()
    try:
        # Health itself says when the image is in the replica: answering then is the point of the test.
        deadline = time.monotonic() + 60
        while True:
            health = root.get("/guarded/healthz", timeout=10)
            # A 503 here is Serve's own backpressure (this copy queues one request), not the replica's answer.
            if health.status_code == 200 and health.json()["images_in_flight"] >= 1:
                break
            if not worker.is_alive() or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # the polling interval, so the probes themselves do not fill the small queue
        info = root.get("/guarded/info", timeout=10)
        still_rendering = worker.is_alive()
    finally:
        worker.join()
    assert health.status_code == 200 and health.json()["images_in_flight"] == 1
    assert info.status_code == 200
    # The health answer came back before the image did: the replica's event loop was free.
    assert still_rendering, "the slow generation finished before health answered; make it slower"
    assert results[0].status_code == 200
    assert root.get("/guarded/healthz").json()["images_in_flight"] == 0


def test_overload_is_a_503_with_retry_after_and_the_service_recovers(root):
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: slow_request(root, steps=150), range(8)))
    statuses = sorted(r.status_code for r in responses)
    # Two in the replica plus one queued by Serve fit at any moment; exact counts depend on timing (Serve's
    # router may reject a little early under a burst, a fast finish frees a slot), so the promise is:
    # some served, the rest turned away at once with 503 (no 5xx of another kind, nothing left hanging).
    assert 200 in statuses and set(statuses) <= {200, 503}, statuses
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected
    assert all(int(r.headers["retry-after"]) > 0 for r in rejected)
    assert root.get("/guarded/healthz").status_code == 200
    assert slow_request(root, steps=2).status_code == 200


# --------------------------------------------------------------------------------------------------
# Deploy-time validation (runs last: it changes the cluster's set of applications)


def test_invalid_app_args_fail_the_deploy_with_a_message_naming_the_field(cluster, client):
    keep = [
        api_application(API_ARGS),
        api_application(GUARDED_ARGS, GUARDED_OPTIONS, name="guarded", route_prefix="/guarded"),
        api_application(PATIENT_ARGS, PATIENT_OPTIONS, name="patient", route_prefix="/patient"),
    ]
    bad = api_application(
        fast_embedded_args(max_steps=2, default_steps=4, backend="tpu"), name="bad", route_prefix="/bad"
    )
    statuses = deploy_config(keep + [bad], timeout_s=120)
    status, message = statuses["bad"]
    assert status == "DEPLOY_FAILED"
    assert "invalid SDXL application args" in message and "backend:" in message, message
    # The running API is untouched by a failed sibling deploy.
    assert client.get("/healthz").status_code == 200
