"""The UI's HTTP client: arguments, /info parsing and the messages users read when a call fails.

Error paths run against a tiny local Starlette server that answers the way the API (or a gateway in
front of it) does; the happy path against the real service lives in test_ui_browser.py.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from app.ui_client import (
    ApiError,
    EditRequest,
    GenerationRequest,
    InvalidUIArgs,
    ServiceInfo,
    api_key_from_env,
    edit,
    fetch_info,
    generate,
    parse_info,
    parse_ui_args,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api_error(status: int, message: str, param: str | None, code: str, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


# 1x1 PNG: enough for "the client passed the service's bytes through unchanged".
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cf"
    "c000000301010018dd8db00000000049454e44ae426082"
)


async def _imagine(request: Request) -> Response:
    scenario = request.path_params["scenario"]
    if scenario == "ok":
        seed = request.query_params.get("seed", "1234")
        return Response(
            _PNG,
            media_type="image/png",
            headers={
                "X-Seed": seed,
                "X-Generation-Time-Ms": "1520.5",
                "X-Steps": request.query_params.get("steps", "30"),
                "X-Guidance-Scale": "5.0",
                "X-Image-Size": "64x64",
            },
        )
    if scenario == "needs-key":
        if request.headers.get("authorization") != "Bearer s3cret":
            return _api_error(
                401, "missing or invalid API key", None, "invalid_api_key", {"WWW-Authenticate": "Bearer"}
            )
        return Response(_PNG, media_type="image/png", headers={"X-Seed": "5"})
    if scenario == "too-long":
        return _api_error(400, "'prompt' must be at most 2000 characters (got 2500)", "prompt", "too_long")
    if scenario == "auth":
        return _api_error(401, "missing or invalid API key", None, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
    if scenario == "busy":
        return _api_error(503, "all replicas are busy", None, "overloaded", {"Retry-After": "7"})
    if scenario == "slow":
        await asyncio.sleep(3)
        return Response(_PNG, media_type="image/png", headers={"X-Seed": "1"})
    if scenario == "crash":
        return HTMLResponse("<html><body>Internal Server Error</body></html>", status_code=500)
    if scenario == "gateway":
        return HTMLResponse("<html><body>504 Gateway Time-out</body></html>", status_code=504)
    if scenario == "not-image":
        return JSONResponse({"hello": "world"})
    return _api_error(404, f"no route {request.url.path}", None, "not_found")


#: What the fake edits route last received, by scenario: the multipart form as the server parsed it.
EDITS_RECEIVED: dict[str, dict] = {}


async def _edits(request: Request) -> Response:
    """``POST /v1/images/edits`` as the API answers it: JSON with the image, echoing what the form carried."""
    scenario = request.path_params["scenario"]
    if scenario == "slow":
        await asyncio.sleep(3)
    if scenario == "strength":
        return _api_error(400, "'strength' must be between 0 and 1, got 1.5", "strength", "out_of_range")
    if scenario == "not-image":
        return JSONResponse({"data": []})
    form = await request.form()
    image, mask = form.get("image"), form.get("mask")
    EDITS_RECEIVED[scenario] = {
        "fields": {key: value for key, value in form.items() if isinstance(value, str)},
        "image": (image.filename, image.content_type, len(await image.read())),
        "mask": None if mask is None else (mask.filename, mask.content_type, len(await mask.read())),
    }
    return JSONResponse(
        {
            "data": [{"b64_json": base64.b64encode(_PNG).decode(), "seed": int(form.get("seed", 77))}],
            "output_format": form.get("output_format", "png"),
            "steps": 6,
            "guidance_scale": 4.5,
            "size": "64x64",
            "generation_time_ms": 812.0,
        }
    )


#: The args the fake API publishes its /info from, through the service's own schema builder.
FAKE_API_ARGS = {
    "backend": "cpu",
    "model_id": "embedded",
    "image_sizes": ["128x64", "64x64"],
    "max_prompt_chars": 77,
    "default_steps": 3,
    "max_steps": 12,
    "default_guidance_scale": 2.5,
    "max_guidance_scale": 9.5,
    "default_output_format": "webp",
}


async def _info(request: Request) -> Response:
    from app.api import Rules, request_schema
    from app.config import parse_app_args

    args = parse_app_args(FAKE_API_ARGS)
    return JSONResponse(
        {
            "backend": "cpu",
            "model_id": "embedded",
            "image_sizes": list(args.image_sizes),
            "default_size": args.image_sizes[0],
            "request_schema": request_schema(Rules(args, guidance_must_exceed=1.0)),
        }
    )


@pytest.fixture(scope="module")
def fake_api():
    app = Starlette(
        routes=[
            Route("/{scenario}/imagine", _imagine),
            Route("/{scenario}/info", _info),
            Route("/{scenario}/v1/images/edits", _edits, methods=["POST"]),
        ]
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "fake API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _call(base: str, scenario: str, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        generate(f"{base}/{scenario}", GenerationRequest(prompt="a red fox"), **kwargs)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Arguments


def test_ui_args_default_to_the_serve_proxy_on_the_local_node():
    args = parse_ui_args(None)
    assert args.api_url == "http://127.0.0.1:8000/serve"
    assert args.api_key_env is None


def test_ui_args_drop_a_trailing_slash_from_the_api_url():
    assert parse_ui_args({"api_url": "http://sdxl-serve:8000/serve/"}).api_url == "http://sdxl-serve:8000/serve"


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"api_url": "sdxl:8000/serve"}, "api_url"),
        ({"api_url": "ftp://host/serve"}, "api_url"),
        ({"api_url": "http://host/serve?x=1"}, "api_url"),
        ({"api_key_env": "not a name"}, "api_key_env"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"request_timeout_s": float("nan")}, "request_timeout_s"),
        ({"api_ulr": "http://host"}, "api_ulr"),
    ],
)
def test_invalid_ui_args_are_rejected_naming_the_field(raw, field):
    with pytest.raises(InvalidUIArgs, match=field):
        parse_ui_args(raw)


def test_build_ui_app_fails_the_deploy_on_bad_args_before_any_replica_starts():
    from app.ui import build_ui_app

    with pytest.raises(InvalidUIArgs, match="api_url"):
        build_ui_app({"api_url": "not-a-url"})


def test_an_unset_api_key_variable_is_reported_by_name(monkeypatch):
    monkeypatch.delenv("SDXL_UI_TEST_KEY", raising=False)
    with pytest.raises(InvalidUIArgs, match="SDXL_UI_TEST_KEY"):
        api_key_from_env(parse_ui_args({"api_key_env": "SDXL_UI_TEST_KEY"}))


# ---------------------------------------------------------------------------------------------
# /info → controls


def test_info_request_schema_sets_the_controls_limits_and_defaults(fake_api):
    info = fetch_info(f"{fake_api}/ok")
    assert info.image_sizes == ("128x64", "64x64")
    assert info.default_size == "128x64"
    assert (info.default_steps, info.max_steps) == (3, 12)
    assert (info.default_guidance_scale, info.max_guidance_scale, info.guidance_above) == (2.5, 9.5, 1.0)
    assert info.max_prompt_chars == 77
    assert info.default_output_format == "webp" and info.output_formats == ("png", "jpeg", "webp")
    assert info.max_seed == 2**32 - 1
    assert "embedded" in info.summary() and "up to 12 steps" in info.summary()


def test_info_without_a_request_schema_keeps_the_api_defaults_and_stays_consistent():
    info = parse_info(
        {
            "image_sizes": ["nonsense"],
            "request_schema": {"imagine": {"properties": {"steps": {"type": "integer", "maximum": 4}}}},
        }
    )
    assert info.image_sizes == ServiceInfo().image_sizes
    # The documented default (30) exceeds the reported limit: the slider must not start out of range.
    assert info.max_steps == 4 and info.default_steps == 4
    assert parse_info({"limits": {"max_steps": 8}}).max_steps == ServiceInfo().max_steps  # only the schema counts


def test_info_says_whether_the_api_needs_a_key():
    assert parse_info({"auth_required": True}).auth_required is True
    assert parse_info({}).auth_required is False
    assert parse_info({"auth_required": "yes"}).auth_required is False  # only a JSON boolean counts


def test_info_that_is_not_an_object_is_a_readable_error():
    with pytest.raises(ApiError, match="not a JSON object"):
        parse_info(["64x64"])


# ---------------------------------------------------------------------------------------------
# Generation


def test_generation_returns_the_service_image_and_the_parameters_it_used(fake_api):
    request = GenerationRequest(
        prompt="a red fox",
        negative_prompt="blur",
        seed=42,
        steps=4,
        guidance_scale=3.5,
        size="64x64",
        output_format="png",
    )
    result = generate(f"{fake_api}/ok", request)
    assert result.image == _PNG
    assert (result.seed, result.generation_ms, result.steps, result.size) == (42, 1520.5, 4, "64x64")
    assert "seed 42" in result.summary() and "1.52 s" in result.summary()


def test_generation_query_carries_every_control_and_splits_the_size():
    request = GenerationRequest(
        prompt="a red fox",
        negative_prompt="blur",
        seed=7,
        steps=4,
        guidance_scale=3.5,
        size="128x64",
        output_format="webp",
    )
    assert request.query() == {
        "prompt": "a red fox",
        "negative_prompt": "blur",
        "seed": "7",
        "steps": "4",
        "guidance_scale": "3.5",
        "width": "128",
        "height": "64",
        "output_format": "webp",
    }


def test_a_random_seed_is_left_to_the_service_and_read_back_from_x_seed(fake_api):
    request = GenerationRequest(prompt="a red fox")
    assert "seed" not in request.query()
    assert generate(f"{fake_api}/ok", request).seed == 1234


def test_an_empty_prompt_is_refused_before_calling_the_service():
    # Port 9 (discard) is never contacted: the message must come from the UI itself.
    with pytest.raises(ApiError, match="Write a prompt"):
        generate("http://127.0.0.1:9", GenerationRequest(prompt="   "))


def test_a_400_shows_the_api_message_that_names_the_limit(fake_api):
    error = _call(fake_api, "too-long")
    assert (error.kind, error.status, error.param) == ("invalid_request", 400, "prompt")
    assert "HTTP 400" in error.message and "'prompt' must be at most 2000 characters" in error.message


def test_a_401_says_the_ui_key_does_not_match_the_api_key(fake_api):
    error = _call(fake_api, "auth")
    assert error.kind == "unauthorized" and "api_key_env" in error.message


def test_the_api_key_from_the_named_variable_is_sent_as_a_bearer_token(fake_api, monkeypatch):
    monkeypatch.setenv("SDXL_UI_TEST_KEY", "s3cret")
    key = api_key_from_env(parse_ui_args({"api_key_env": "SDXL_UI_TEST_KEY"}))
    assert generate(f"{fake_api}/needs-key", GenerationRequest(prompt="x"), api_key=key).image == _PNG
    assert _call(fake_api, "needs-key").kind == "unauthorized"


def test_a_503_says_busy_and_when_to_retry(fake_api):
    error = _call(fake_api, "busy")
    assert error.kind == "busy" and error.status == 503
    assert "busy" in error.message and "7 s" in error.message


def test_a_slow_service_is_reported_as_a_timeout_not_a_hang(fake_api):
    started = time.monotonic()
    error = _call(fake_api, "slow", timeout_s=0.5)
    assert error.kind == "timeout" and "0.5 s" in error.message
    assert time.monotonic() - started < 2.5


def test_a_gateway_timeout_is_reported_as_a_timeout(fake_api):
    error = _call(fake_api, "gateway")
    assert error.kind == "timeout" and error.status == 504


def test_a_500_html_page_becomes_a_short_message_without_markup(fake_api):
    error = _call(fake_api, "crash")
    assert error.kind == "server_error" and "HTTP 500" in error.message and "<html" not in error.message


def test_a_200_without_an_image_is_an_error_not_a_picture(fake_api):
    error = _call(fake_api, "not-image")
    assert error.kind == "bad_response" and "no image" in error.message


def test_a_service_that_is_down_is_reported_as_unreachable_with_its_url():
    url = f"http://127.0.0.1:{_free_port()}/serve"
    with pytest.raises(ApiError) as caught:
        generate(url, GenerationRequest(prompt="a red fox"), timeout_s=5)
    assert caught.value.kind == "unreachable" and url in caught.value.message
    with pytest.raises(ApiError, match="unreachable"):
        fetch_info(url)


# ---------------------------------------------------------------------------------------------
# Edits (POST /v1/images/edits, multipart)

_EDIT = EditRequest(prompt="a red fox in snow", image=_PNG + b"image", mask=_PNG, strength=0.6, seed=9)


def test_an_edit_sends_image_and_mask_as_multipart_and_returns_what_the_service_used(fake_api):
    result = edit(f"{fake_api}/ok", _EDIT)
    assert result.image == _PNG and result.media_type == "image/png" and result.seed == 9
    assert (result.steps, result.guidance_scale, result.size, result.generation_ms) == (6, 4.5, "64x64", 812.0)


def test_an_edit_reaches_the_service_as_a_form_with_every_control_and_both_files(fake_api):
    edit(f"{fake_api}/ok", _EDIT)
    assert EDITS_RECEIVED["ok"] == {
        "fields": {"prompt": "a red fox in snow", "response_format": "b64_json", "seed": "9", "strength": "0.6"},
        "image": ("image.png", "image/png", len(_EDIT.image)),
        "mask": ("mask.png", "image/png", len(_PNG)),
    }
    edit(f"{fake_api}/ok", EditRequest(prompt="no mask", image=_PNG))
    assert EDITS_RECEIVED["ok"]["mask"] is None and EDITS_RECEIVED["ok"]["fields"]["prompt"] == "no mask"


def test_an_edit_the_service_refuses_shows_the_api_message(fake_api):
    with pytest.raises(ApiError) as caught:
        edit(f"{fake_api}/strength", _EDIT)
    assert caught.value.status == 400 and "'strength' must be between 0 and 1" in caught.value.message


def test_a_slow_edit_is_reported_as_a_timeout_not_a_hang(fake_api):
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        edit(f"{fake_api}/slow", _EDIT, timeout_s=0.5)
    assert caught.value.kind == "timeout" and "0.5 s" in caught.value.message
    assert time.monotonic() - started < 2.5


def test_an_edit_answer_without_an_image_is_an_error_not_a_picture(fake_api):
    with pytest.raises(ApiError) as caught:
        edit(f"{fake_api}/not-image", _EDIT)
    assert caught.value.kind == "bad_response" and "no image" in caught.value.message


def test_an_edit_without_an_image_is_refused_before_calling_the_service():
    url = f"http://127.0.0.1:{_free_port()}/serve"
    with pytest.raises(ApiError, match="Upload an image"):
        edit(url, EditRequest(prompt="a red fox"))
