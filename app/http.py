"""HTTP plumbing of the service, without any model: routes and methods, the API key, reading a bounded
JSON body, and the one error shape every failure is answered with.

Errors are ``{"error": {"message", "type", "param", "code"}}`` (the OpenAI shape): ``param`` names the
offending field or is null, ``code`` is a stable machine-readable reason.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

#: Seconds a client is told to wait after a 503 (Serve's backpressure and the replica's own 503s).
RETRY_AFTER_S = 5

ROUTES: dict[str, tuple[str, ...]] = {
    "/imagine": ("GET",),
    "/v1/images/generations": ("POST",),
    "/v1/images/edits": ("POST",),
    "/healthz": ("GET", "HEAD"),  # HEAD: probes and load balancers that only look at the status
    "/info": ("GET",),
}


class ApiError(Exception):
    """An HTTP error answered with the service's JSON error body."""

    TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "invalid_request_error",
        405: "invalid_request_error",
        413: "invalid_request_error",
        415: "invalid_request_error",
        500: "server_error",
        503: "service_unavailable",
    }

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.TYPES.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }


def not_ready() -> ApiError:
    return ApiError(503, "the model is not ready", code="model_not_ready", headers={"Retry-After": str(RETRY_AFTER_S)})


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error may quote client text that is not valid
    UTF-8 on its own (a lone surrogate from a JSON escape), which must still come back as a 4xx."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(error: ApiError) -> JSONResponse:
    return AsciiJSONResponse(error.body(), status_code=error.status, headers=error.headers)


def route_path(scope: dict) -> str:
    """The request path relative to the application's route prefix (``root_path``)."""
    path = scope.get("path", "/")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


def resolve_route(request: Request) -> str:
    """The route a request is for; 404 for an unknown path, 405 (with ``Allow``) for a wrong method."""
    path = route_path(request.scope)
    methods = ROUTES.get(path)
    if methods is None:
        raise ApiError(404, f"no route {path}; routes: {', '.join(ROUTES)}", code="not_found")
    if request.method not in methods:
        raise ApiError(
            405,
            f"{path} accepts {', '.join(methods)}, not {request.method}",
            code="method_not_allowed",
            headers={"Allow": ", ".join(methods)},
        )
    return path


def authorize(request: Request, api_key: str | None) -> None:
    """Require ``Authorization: Bearer <api_key>`` when a key is configured."""
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken must not reveal how much of a guessed key was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON: 415 unless it says application/json, 413 past ``limit`` bytes, 400 if malformed."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(
            415,
            f"Content-Type must be application/json, not {content_type or 'missing'!r}",
            code="unsupported_media_type",
        )
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, f"request body exceeds {limit} bytes", code="body_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    # Count while reading: a chunked body has no Content-Length to trust.
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None
    except RecursionError:
        # Deeply nested arrays/objects exhaust the parser's stack: still the client's malformed input.
        raise ApiError(400, "the request body is nested too deeply", code="invalid_json") from None
