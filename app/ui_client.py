"""The web UI's HTTP client: everything the UI knows about the service goes through its public API.

Plain functions over ``httpx``, with no Gradio and no Ray, so that what a user reads when something
fails (a 400 naming the bad field, 401, 503 busy, a timeout, a service that is down) is decided here
and tested without a browser. The UI never fabricates an image: a call either returns the service's
image bytes or raises :class:`ApiError` carrying a message written for people.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.api import MAX_SEED
from app.config import MEDIA_TYPES, AppArgs, describe_validation_error, parse_size, read_api_key

ErrorKind = Literal["invalid_request", "unauthorized", "busy", "timeout", "unreachable", "server_error", "bad_response"]

# The API's own defaults: what the UI shows until /info answers (or when it answers only partly).
_API_DEFAULTS = AppArgs()


class UIArgs(BaseModel):
    """Arguments of the UI Serve application (serveConfigV2 ``applications[name=ui].args``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_url: str = Field(
        default="http://127.0.0.1:8000/serve",
        min_length=1,
        max_length=2048,
        description=(
            "Base URL of the SDXL API, route prefix included. In a RayService every Ray node runs a "
            "Serve proxy on port 8000, so the default reaches the API from the UI replica's own node."
        ),
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "Name of an environment variable holding an API key the UI sends for every visitor as "
            "'Authorization: Bearer' (the API app's api_key_env): then anyone who reaches the UI can "
            "generate, so protect its route. Unset (the default): when the API needs a key, the page asks "
            "each visitor for theirs and holds none itself."
        ),
    )
    request_timeout_s: float = Field(
        default=300.0,
        gt=0.0,
        le=3600.0,
        allow_inf_nan=False,
        description="How long the UI waits for one generation before telling the user it timed out.",
    )
    title: str = Field(default="Stable Diffusion XL", min_length=1, max_length=200, description="Page heading.")

    @field_validator("api_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"api_url {value!r} must be an absolute http(s) URL such as http://127.0.0.1:8000/serve")
        if parts.query or parts.fragment:
            raise ValueError(f"api_url {value!r} must not contain a query or fragment")
        return value.strip().rstrip("/")


class InvalidUIArgs(ValueError):
    """Raised by :func:`parse_ui_args`; the message names every offending field."""


def parse_ui_args(raw: dict | None) -> UIArgs:
    try:
        return UIArgs.model_validate(raw or {})
    except ValidationError as error:
        raise InvalidUIArgs("invalid UI application args: " + describe_validation_error(error)) from None


def api_key_from_env(args: UIArgs) -> str | None:
    """The key named by ``api_key_env``; an empty or unset variable is a deploy error, not a silent 401 later."""
    try:
        return read_api_key(args.api_key_env)
    except ValueError as error:
        raise InvalidUIArgs(f"invalid UI application args: {error}") from None


class ApiError(Exception):
    """A failed API call, with a message meant to be shown to the user as is."""

    def __init__(self, message: str, *, kind: ErrorKind, status: int | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.param = param


@dataclass(frozen=True)
class ServiceInfo:
    """What the UI's controls are built from: sizes, limits and defaults the service reports on /info."""

    image_sizes: tuple[str, ...] = _API_DEFAULTS.image_sizes
    default_steps: int = _API_DEFAULTS.default_steps
    max_steps: int = _API_DEFAULTS.max_steps
    default_guidance_scale: float = _API_DEFAULTS.default_guidance_scale
    max_guidance_scale: float = _API_DEFAULTS.max_guidance_scale
    max_prompt_chars: int = _API_DEFAULTS.max_prompt_chars
    #: ``guidance_scale`` must be greater than this on the service's model (JSON Schema exclusiveMinimum).
    guidance_above: float | None = None
    default_strength: float = _API_DEFAULTS.default_strength
    max_seed: int = MAX_SEED
    default_output_format: str = _API_DEFAULTS.default_output_format
    output_formats: tuple[str, ...] = tuple(MEDIA_TYPES)
    backend: str | None = None
    model_id: str | None = None
    #: The API's generation routes need 'Authorization: Bearer <key>' (its /info says so).
    auth_required: bool = False

    @property
    def default_size(self) -> str:
        return self.image_sizes[0]

    def summary(self) -> str:
        """One line for the page: which model answers, on what, within which limits."""
        who = " · ".join(part for part in (self.model_id, self.backend) if part) or "SDXL service"
        return (
            f"{who} · sizes {', '.join(self.image_sizes)} · up to {self.max_steps} steps · "
            f"guidance ≤ {self.max_guidance_scale:g} · prompts ≤ {self.max_prompt_chars} characters"
        )


def _number(value: Any, kind: type) -> int | float | None:
    """``value`` as ``kind`` when it is a finite, non-negative JSON number (bool is not a number here)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return kind(value)
    return None


def parse_info(data: Any) -> ServiceInfo:
    """Build :class:`ServiceInfo` from /info: the deployment's sizes, and the request JSON Schema of
    ``GET /imagine`` (``request_schema.imagine``) for every bound and default; the API's defaults stay for
    whatever it leaves out."""
    if not isinstance(data, dict):
        raise ApiError("The service's /info answer is not a JSON object.", kind="bad_response")
    base = ServiceInfo()
    values: dict[str, Any] = {}

    sizes = data.get("image_sizes")
    if isinstance(sizes, list) and sizes:
        parsed = []
        for size in sizes:
            try:
                parsed.append("{}x{}".format(*parse_size(size)))
            except (TypeError, ValueError, AttributeError):
                continue
        if parsed:
            values["image_sizes"] = tuple(dict.fromkeys(parsed))
    default_size = data.get("default_size")
    if isinstance(default_size, str) and default_size in values.get("image_sizes", ()):
        values["image_sizes"] = (default_size,) + tuple(s for s in values["image_sizes"] if s != default_size)

    schema = data.get("request_schema")
    route = schema.get("imagine") if isinstance(schema, dict) else None
    fields = route.get("properties") if isinstance(route, dict) else None
    fields = fields if isinstance(fields, dict) else {}

    def keyword(field_name: str, name: str) -> Any:
        entry = fields.get(field_name)
        return entry.get(name) if isinstance(entry, dict) else None

    for attribute, field_name, name, kind in (
        ("default_steps", "steps", "default", int),
        ("max_steps", "steps", "maximum", int),
        ("max_prompt_chars", "prompt", "maxLength", int),
        ("max_seed", "seed", "maximum", int),
        ("default_guidance_scale", "guidance_scale", "default", float),
        ("max_guidance_scale", "guidance_scale", "maximum", float),
        ("guidance_above", "guidance_scale", "exclusiveMinimum", float),
    ):
        value = _number(keyword(field_name, name), kind)
        if value is not None:
            values[attribute] = value

    edits = schema.get("images_edits") if isinstance(schema, dict) else None
    edit_fields = edits.get("properties") if isinstance(edits, dict) else None
    strength = edit_fields.get("strength") if isinstance(edit_fields, dict) else None
    default_strength = _number(strength.get("default"), float) if isinstance(strength, dict) else None
    if default_strength is not None and 0 < default_strength <= 1:
        values["default_strength"] = default_strength

    formats = keyword("output_format", "enum")
    if isinstance(formats, list):
        known = tuple(f for f in formats if f in MEDIA_TYPES)
        if known:
            values["output_formats"] = known
    default_format = keyword("output_format", "default")
    if default_format in values.get("output_formats", base.output_formats):
        values["default_output_format"] = default_format

    for name in ("backend", "model_id"):
        if isinstance(data.get(name), str):
            values[name] = data[name]
    if isinstance(data.get("auth_required"), bool):
        values["auth_required"] = data["auth_required"]

    info = ServiceInfo(**{**base.__dict__, **values})
    # Keep the controls consistent even if /info reports a default above its own limit.
    if info.default_steps > info.max_steps:
        info = ServiceInfo(**{**info.__dict__, "default_steps": info.max_steps})
    if info.default_guidance_scale > info.max_guidance_scale:
        info = ServiceInfo(**{**info.__dict__, "default_guidance_scale": info.max_guidance_scale})
    return info


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None  # None: the service draws one and reports it in X-Seed
    steps: int | None = None
    guidance_scale: float | None = None
    size: str | None = None  # "WxH"
    output_format: str | None = None

    def query(self) -> dict[str, str]:
        params: dict[str, str] = {"prompt": self.prompt}
        if self.negative_prompt:
            params["negative_prompt"] = self.negative_prompt
        if self.seed is not None:
            params["seed"] = str(int(self.seed))
        if self.steps is not None:
            params["steps"] = str(int(self.steps))
        if self.guidance_scale is not None:
            params["guidance_scale"] = repr(float(self.guidance_scale))
        if self.size:
            width, height = parse_size(self.size)
            params["width"], params["height"] = str(width), str(height)
        if self.output_format:
            params["output_format"] = self.output_format
        return params


@dataclass(frozen=True)
class EditRequest(GenerationRequest):
    """``POST /v1/images/edits``: the image to edit (PNG bytes), an optional mask (transparent = re-draw)."""

    image: bytes = field(default=b"", repr=False)
    mask: bytes | None = field(default=None, repr=False)
    strength: float | None = None

    def form(self) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
        """The multipart fields and files of the request."""
        fields: dict[str, str] = {"prompt": self.prompt, "response_format": "b64_json"}
        for name in ("negative_prompt", "seed", "steps", "guidance_scale", "size", "output_format", "strength"):
            value = getattr(self, name)
            if value is not None and value != "":
                fields[name] = repr(float(value)) if isinstance(value, float) else str(value)
        files = {"image": ("image.png", self.image, "image/png")}
        if self.mask is not None:
            files["mask"] = ("mask.png", self.mask, "image/png")
        return fields, files


@dataclass(frozen=True)
class GenerationResult:
    image: bytes = field(repr=False)
    media_type: str
    seed: int
    generation_ms: float | None
    steps: int | None
    guidance_scale: float | None
    size: str | None
    request: GenerationRequest

    @property
    def extension(self) -> str:
        subtype = self.media_type.split("/", 1)[-1].split(";", 1)[0].strip().lower()
        return {"jpeg": "jpg", "png": "png", "webp": "webp"}.get(subtype, "bin")

    def summary(self) -> str:
        parts = [f"seed {self.seed}"]
        if self.generation_ms is not None:
            parts.append(f"generated in {self.generation_ms / 1000:.2f} s")
        if self.size:
            parts.append(self.size)
        if self.steps is not None:
            parts.append(f"{self.steps} steps")
        if self.guidance_scale is not None:
            parts.append(f"guidance {self.guidance_scale:g}")
        parts.append(self.extension.replace("jpg", "jpeg").upper())
        return " · ".join(parts)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json, image/*"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _client(timeout_s: float) -> httpx.Client:
    # Connecting is quick or never: fail an unreachable service fast, but let generation take its time.
    # trust_env=False: the UI talks to its own service; an HTTP(S)_PROXY meant for the internet must not intercept it.
    return httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)), trust_env=False)


def error_from_response(response: httpx.Response) -> ApiError:
    """Turn a non-2xx answer into a readable :class:`ApiError`, using the API's JSON error body when present."""
    status = response.status_code
    message = None
    param = None
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = error.get("message") if isinstance(error.get("message"), str) else None
            param = error.get("param") if isinstance(error.get("param"), str) else None
        elif isinstance(body, dict) and isinstance(body.get("detail"), str):
            message = body["detail"]
    except (ValueError, json.JSONDecodeError):
        pass
    if message is None:
        text = response.text.strip()
        message = text[:300] if text and "<html" not in text[:200].lower() else None

    if status == 503 or status == 429:
        retry = response.headers.get("Retry-After")
        wait = f" Try again in {retry} s." if retry and retry.isdigit() else " Try again in a moment."
        detail = f" ({message})" if message else ""
        return ApiError(f"The service is busy{detail}.{wait}", kind="busy", status=status, param=param)
    if status == 401 or status == 403:
        detail = f": {message}" if message else ""
        return ApiError(
            f"The service refused the UI's credentials (HTTP {status}){detail}. "
            "Check that the UI's api_key_env names the same key as the API's.",
            kind="unauthorized",
            status=status,
            param=param,
        )
    if status == 413:
        return ApiError(
            f"The upload is too large for the service (HTTP 413{': ' + message if message else ''}). "
            "Use a smaller or more compressed image.",
            kind="invalid_request",
            status=status,
        )
    if status == 504:
        return ApiError(
            "The service took too long to answer (HTTP 504 from a gateway). Try fewer steps or a smaller size.",
            kind="timeout",
            status=status,
        )
    if 400 <= status < 500:
        field_note = f" [{param}]" if param and message and param not in message else ""
        return ApiError(
            f"The service rejected the request (HTTP {status}): {message or response.reason_phrase}{field_note}",
            kind="invalid_request",
            status=status,
            param=param,
        )
    return ApiError(
        f"The service failed (HTTP {status}){': ' + message if message else ''}. See the service logs.",
        kind="server_error",
        status=status,
        param=param,
    )


def _unreachable(api_url: str, error: Exception) -> ApiError:
    return ApiError(
        f"The service at {api_url} is unreachable ({type(error).__name__}: {error or 'no answer'}). "
        "Is the API application running?",
        kind="unreachable",
    )


def _call(
    api_url: str, method: str, path: str, *, api_key: str | None, timeout_s: float, timeout_message: str, **send
) -> httpx.Response:
    """One request to the service; every failure but a 200 becomes an :class:`ApiError` a person can act on."""
    try:
        with _client(timeout_s) as client:
            response = client.request(method, f"{api_url}{path}", headers=_headers(api_key), **send)
    except httpx.TimeoutException as error:
        raise ApiError(timeout_message, kind="timeout") from error
    except httpx.TransportError as error:
        raise _unreachable(api_url, error) from error
    if response.status_code != 200:
        raise error_from_response(response)
    return response


def fetch_info(api_url: str, *, api_key: str | None = None, timeout_s: float = 10.0) -> ServiceInfo:
    """GET ``{api_url}/info``."""
    response = _call(
        api_url,
        "GET",
        "/info",
        api_key=api_key,
        timeout_s=timeout_s,
        timeout_message=f"The service at {api_url} did not answer /info within {timeout_s:g} s.",
    )
    try:
        return parse_info(response.json())
    except ValueError as error:
        raise ApiError("The service's /info answer is not JSON.", kind="bad_response", status=200) from error


def _int_header(response: httpx.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


def _float_header(response: httpx.Response, name: str) -> float | None:
    try:
        value = float(response.headers[name])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def generate(
    api_url: str, request: GenerationRequest, *, api_key: str | None = None, timeout_s: float = 300.0
) -> GenerationResult:
    """GET ``{api_url}/imagine`` and return the image with the parameters the service actually used."""
    if not request.prompt.strip():
        # The API would say the same; answering locally saves a round trip for the commonest slip.
        raise ApiError(
            "Write a prompt first: the service needs a description of the image.",
            kind="invalid_request",
            param="prompt",
        )
    response = _call(
        api_url,
        "GET",
        "/imagine",
        params=request.query(),
        api_key=api_key,
        timeout_s=timeout_s,
        timeout_message=f"No image after {timeout_s:g} s: the service is slow or overloaded. "
        "Try again, or use fewer steps.",
    )

    media_type = response.headers.get("content-type", "")
    if not media_type.startswith("image/") or not response.content:
        raise ApiError(
            f"The service answered 200 but sent no image (content-type {media_type or 'missing'}).",
            kind="bad_response",
            status=200,
        )
    seed = _int_header(response, "X-Seed")
    if seed is None:
        if request.seed is None:
            raise ApiError("The service sent an image without its X-Seed header.", kind="bad_response", status=200)
        seed = request.seed
    return GenerationResult(
        image=response.content,
        media_type=media_type,
        seed=seed,
        generation_ms=_float_header(response, "X-Generation-Time-Ms"),
        steps=_int_header(response, "X-Steps"),
        guidance_scale=_float_header(response, "X-Guidance-Scale"),
        size=response.headers.get("X-Image-Size"),
        request=request,
    )


def edit(
    api_url: str, request: EditRequest, *, api_key: str | None = None, timeout_s: float = 300.0
) -> GenerationResult:
    """POST ``{api_url}/v1/images/edits`` (multipart) and return the first image with what the service used."""
    if not request.prompt.strip():
        raise ApiError(
            "Write a prompt first: it says what the edited image should show.", kind="invalid_request", param="prompt"
        )
    if not request.image:
        raise ApiError("Upload an image to edit first.", kind="invalid_request", param="image")
    fields, files = request.form()
    response = _call(
        api_url,
        "POST",
        "/v1/images/edits",
        data=fields,
        files=files,
        api_key=api_key,
        timeout_s=timeout_s,
        timeout_message=f"No image after {timeout_s:g} s: the service is slow or overloaded. Try again.",
    )
    try:
        body = response.json()
        first = body["data"][0]
        image = base64.b64decode(first["b64_json"], validate=True)
        seed = int(first["seed"])
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ApiError("The service answered 200 but sent no image.", kind="bad_response", status=200) from error
    output_format = body.get("output_format") if isinstance(body.get("output_format"), str) else "png"
    return GenerationResult(
        image=image,
        media_type=MEDIA_TYPES.get(output_format, "image/png"),
        seed=seed,
        generation_ms=body.get("generation_time_ms")
        if isinstance(body.get("generation_time_ms"), (int, float))
        else None,
        steps=body.get("steps") if isinstance(body.get("steps"), int) else None,
        guidance_scale=body.get("guidance_scale") if isinstance(body.get("guidance_scale"), (int, float)) else None,
        size=body.get("size") if isinstance(body.get("size"), str) else None,
        request=request,
    )
