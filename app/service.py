"""The ``SDXLService`` Ray Serve deployment: HTTP ↔ typed requests ↔ batched backend calls.

Routes (relative to the application's route prefix, ``/serve`` in the chart and locally):

* ``GET  /imagine``                 image bytes; query fields from :data:`app.api.REQUEST_FIELDS`
* ``POST /v1/images/generations``   OpenAI Images API shape, ``b64_json`` only
* ``GET  /healthz``                 200 when the model is loaded and working, else 503
* ``GET  /info``                    backend, model, sizes, limits, defaults and the field table

The replica's event loop only parses, queues and answers: the pipeline runs in a single dedicated
thread (one model, one call at a time) and encoding in a second pool, so health checks and queueing
keep answering while an image renders.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve.config import BackpressureConfig
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api import (
    MEDIA_TYPES,
    ApiError,
    GenerationRequest,
    ImageJob,
    describe_fields,
    parse_imagine_query,
    parse_openai_body,
)
from app.batching import batch_wait_s, plan_pipeline_calls
from app.config import AppArgs, deployment_warnings, parse_app_args
from app.encoding import EncoderSettings, encode_image

logger = logging.getLogger("ray.serve")

#: Seconds a client is told to wait after a 503 (Serve's backpressure and the replica's own 503s).
RETRY_AFTER_S = 5

#: Failed pipeline calls in a row after which the replica reports itself unhealthy so Serve replaces it
#: (a wedged accelerator fails every call; one odd failure should not cost a replica).
UNHEALTHY_AFTER_FAILURES = 3

ROUTES: dict[str, tuple[str, ...]] = {
    "/imagine": ("GET",),
    "/v1/images/generations": ("POST",),
    "/healthz": ("GET", "HEAD"),  # HEAD: probes and load balancers that only look at the status
    "/info": ("GET",),
}
#: Routes that need the API key when one is configured.
PROTECTED_ROUTES = frozenset({"/imagine", "/v1/images/generations"})


@dataclass(frozen=True)
class GeneratedImage:
    image: Any  # PIL.Image.Image
    generation_ms: int
    #: Requested images the pipeline call made together with this one (itself included; padding not).
    batch_images: int
    #: From the image's arrival in the replica to the start of the pipeline call that made it.
    queue_wait_ms: int


def route_path(scope: dict) -> str:
    """The request path relative to the application's route prefix (``root_path``)."""
    path = scope.get("path", "/")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error may quote client text that is not valid
    UTF-8 on its own (a lone surrogate from a JSON escape), which must still come back as a 4xx."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(error: ApiError) -> JSONResponse:
    return AsciiJSONResponse(error.body(), status_code=error.status, headers=error.headers)


def read_api_key(args: AppArgs) -> str | None:
    """The configured API key, or ``None`` when the service is open. An empty variable is a deploy error."""
    if not args.api_key_env:
        return None
    key = os.environ.get(args.api_key_env, "")
    if not key:
        raise ValueError(
            f"api_key_env names {args.api_key_env!r} but that environment variable is empty or unset in the "
            "replica: set it (e.g. from a Kubernetes Secret) or remove api_key_env"
        )
    return key


@serve.deployment(
    name="SDXLService",
    # Defaults for a one-replica local run; the chart overrides them per deployment in serveConfigV2.
    max_ongoing_requests=16,
    max_queued_requests=64,
    # Past max_queued_requests Serve's proxy answers 503 with this Retry-After (Ray >= 2.60).
    backpressure_config=BackpressureConfig(status_code=503, retry_after_s=RETRY_AFTER_S),
    health_check_period_s=10,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=60,
    # Serve's default retries a failing constructor 20 times: with a Neuron model that is 20 loads of
    # minutes each before a mismatch (say, a batch size the model was not compiled for) fails the deploy.
    max_constructor_retry_count=3,
)
class SDXLService:
    def __init__(self, raw_args: dict):
        # Validated again here: the replica may run a different process than the controller.
        self.args = parse_app_args(raw_args)
        self.warnings = deployment_warnings(self.args)
        for warning in self.warnings:
            logger.warning("SDXLService: %s", warning)
        self.api_key = read_api_key(self.args)
        self.encoder_settings = EncoderSettings.from_args(self.args)
        self._pipeline_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdxl-pipeline")
        self._encoder_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sdxl-encode")
        self._failures_in_a_row = 0
        #: id() of every image queued for or inside the pipeline -> perf_counter() of its arrival;
        #: empty: a new image finds the pipeline idle.
        self._pending_images: dict[int, float] = {}
        #: perf_counter() when the running pipeline call began (None between calls), its image count, and
        #: moving averages of call durations by image count: together, when the pipeline will be free.
        self._call_started: float | None = None
        self._images_in_call = 0
        self._call_seconds: dict[int, float] = {}
        self.backend = None

        from app.backends import load_backend

        started = time.perf_counter()
        backend = load_backend(self.args)
        self.load_s = round(time.perf_counter() - started, 3)
        # Gather at most one pipeline call's worth of images per batch: a larger gather would make the
        # first compatible group wait for every other group in the same batch.
        self._generate_batch.set_max_batch_size(backend.batch_size)
        if self.args.warmup:
            self.warmup_s = self._warm_up(backend)
        else:
            self.warmup_s = None
        self.backend = backend
        logger.info("SDXLService ready: backend=%s model=%s load_s=%s warmup_s=%s",
                    self.args.backend, self.args.model_id, self.load_s, self.warmup_s)

    def _warm_up(self, backend) -> float:
        # The first call initialises the runtime and loads the graphs (several times slower on Neuron): pay it before
        # the replica reports healthy, at the default size and steps (padded to the compiled batch on Neuron).
        width, height = self.args.default_size
        job = ImageJob("warm-up", None, 0, self.args.default_steps, self.args.default_guidance_scale, width, height)
        started = time.perf_counter()
        for call in plan_pipeline_calls([job], backend.batch_size, fixed_batch=backend.fixed_batch):
            backend.generate(call.jobs)
        return round(time.perf_counter() - started, 3)

    # ---------------------------------------------------------------------------------------------
    # Health

    @property
    def healthy(self) -> bool:
        return self.backend is not None and self._failures_in_a_row < UNHEALTHY_AFTER_FAILURES

    def check_health(self) -> None:
        """Serve's replica health check: a replica without a working model is replaced."""
        if not self.healthy:
            raise RuntimeError(
                f"model not usable: {self._failures_in_a_row} pipeline calls failed in a row"
                if self.backend is not None
                else "model not loaded"
            )

    # ---------------------------------------------------------------------------------------------
    # HTTP

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except ApiError as error:
            return error_response(error)
        except Exception:  # noqa: BLE001 - a bug must still answer in the documented error shape
            logger.exception("unhandled error for %s %s", request.method, request.url.path)
            return error_response(ApiError(500, "internal error (see the replica's log)", code="internal_error"))

    async def _dispatch(self, request: Request) -> Response:
        path = route_path(request.scope)
        methods = ROUTES.get(path)
        if methods is None:
            raise ApiError(404, f"no route {path}; routes: {', '.join(ROUTES)}", code="not_found")
        if request.method not in methods:
            raise ApiError(
                405, f"{path} accepts {', '.join(methods)}, not {request.method}",
                code="method_not_allowed", headers={"Allow": ", ".join(methods)},
            )
        if path == "/healthz":
            health = self._healthz()
            return Response(status_code=health.status_code) if request.method == "HEAD" else health
        if path == "/info":
            return JSONResponse(self.info())
        self._authorize(request)
        if not self.healthy:
            raise ApiError(503, "the model is not ready", code="model_not_ready",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        if path == "/imagine":
            return await self._imagine(request)
        return await self._images_generations(request)

    def _healthz(self) -> Response:
        body = {"status": "ok" if self.healthy else "unavailable", "backend": self.args.backend,
                "model_id": self.args.model_id, "images_in_flight": len(self._pending_images)}
        return JSONResponse(body, status_code=200 if self.healthy else 503)

    def info(self) -> dict:
        args = self.args
        return {
            "service": "sdxl-inf2",
            "backend": args.backend,
            "model_id": args.model_id,
            "model_revision": args.model_revision,
            "image_sizes": list(args.image_sizes),
            "default_size": args.image_sizes[0],
            "batch_size": args.batch_size,
            "output_formats": list(MEDIA_TYPES),
            "auth_required": self.api_key is not None,
            "defaults": {
                "steps": args.default_steps,
                "guidance_scale": args.default_guidance_scale,
                "output_format": args.default_output_format,
                "size": args.image_sizes[0],
            },
            "limits": {
                "max_steps": args.max_steps,
                "max_guidance_scale": args.max_guidance_scale,
                "max_prompt_chars": args.max_prompt_chars,
                "max_images_per_request": args.max_images_per_request,
                "max_body_bytes": args.max_body_bytes,
                "max_seed": 2**32 - 1,
            },
            "fields": self._describe_fields(),
            "backend_details": self.backend.details if self.backend else None,
            "warnings": self.warnings,
            "load_s": self.load_s,
            "warmup_s": self.warmup_s,
        }

    def _describe_fields(self) -> dict:
        fields = describe_fields(self.args)
        floor = self.backend.guidance_must_exceed if self.backend else None
        if floor is not None:
            for route_fields in fields.values():
                route_fields["guidance_scale"]["exclusiveMinimum"] = floor
        return fields

    def _check_backend_rules(self, parsed: GenerationRequest) -> None:
        """Rules of the loaded model that the deployment's args cannot know (e.g. a compiled Neuron batch)."""
        floor = self.backend.guidance_must_exceed
        if floor is not None and parsed.jobs[0].guidance_scale <= floor:
            raise ApiError(
                400,
                f"'guidance_scale' must be greater than {floor:g} on this model (got {parsed.jobs[0].guidance_scale:g}): "
                "its compiled batch runs only with classifier-free guidance",
                param="guidance_scale",
                code="out_of_range",
            )

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken must not reveal how much of a guessed key was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def _imagine(self, request: Request) -> Response:
        parsed = parse_imagine_query(request.query_params.multi_items(), self.args)
        (result,) = await self._render(parsed)
        job = parsed.jobs[0]
        data = await self._encode(result.image, parsed.output_format)
        return Response(
            data,
            media_type=MEDIA_TYPES[parsed.output_format],
            headers={
                "X-Seed": str(job.seed),
                "X-Generation-Time-Ms": str(result.generation_ms),
                "X-Batch-Size": str(result.batch_images),
                "X-Queue-Wait-Ms": str(result.queue_wait_ms),
                "X-Steps": str(job.steps),
                "X-Guidance-Scale": f"{job.guidance_scale:g}",
                "X-Image-Size": f"{job.width}x{job.height}",
                "Cache-Control": "no-store",
            },
        )

    async def _images_generations(self, request: Request) -> Response:
        parsed = parse_openai_body(await self._read_json(request), self.args)
        results = await self._render(parsed)
        encoded = await asyncio.gather(*(self._encode(r.image, parsed.output_format, as_base64=True) for r in results))
        job = parsed.jobs[0]
        return JSONResponse({
            "created": int(time.time()),
            "data": [{"b64_json": data, "seed": image_job.seed} for data, image_job in zip(encoded, parsed.jobs)],
            "output_format": parsed.output_format,
            "size": f"{job.width}x{job.height}",
            "steps": job.steps,
            "guidance_scale": job.guidance_scale,
            "generation_time_ms": max(r.generation_ms for r in results),
        })

    async def _read_json(self, request: Request) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, f"Content-Type must be application/json, not {content_type or 'missing'!r}",
                           code="unsupported_media_type")
        limit = self.args.max_body_bytes
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

    # ---------------------------------------------------------------------------------------------
    # Generation

    async def _render(self, parsed: GenerationRequest) -> list[GeneratedImage]:
        self._check_backend_rules(parsed)
        # serve.batch reads the timeout when a batch's first image reaches its queue; requests that
        # arrive together at an idle replica may still share a batch (the later ones see it busy).
        self._generate_batch.set_batch_wait_timeout_s(self._batch_wait_s())
        ids = {id(job) for job in parsed.jobs}
        arrived = time.perf_counter()
        self._pending_images.update(dict.fromkeys(ids, arrived))
        try:
            # One queue entry per image, so a request for n images shares batches with other requests.
            outcomes = await asyncio.gather(*(self._generate_batch(job) for job in parsed.jobs))
        finally:
            # Normally gone already (each call removes its images as it ends); not if the client left
            # and serve.batch dropped its images before they ran.
            for image_id in ids:
                self._pending_images.pop(image_id, None)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise ApiError(500, f"image generation failed: {type(outcome).__name__}: {outcome}",
                               code="generation_failed")
        return outcomes

    def _batch_wait_s(self) -> float:
        """How long a batch starting now waits for partners (see :func:`app.batching.batch_wait_s`)."""
        elapsed = None if self._call_started is None else time.perf_counter() - self._call_started
        return batch_wait_s(
            images_in_flight=len(self._pending_images),
            images_in_call=self._images_in_call,
            call_elapsed_s=elapsed,
            call_seconds=self._call_seconds,
            batch_size=self.backend.batch_size,
            cap_s=self.args.batch_wait_timeout_s,
        )

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.05)
    async def _generate_batch(self, jobs: list[ImageJob]) -> list[GeneratedImage | Exception]:
        loop = asyncio.get_running_loop()
        outcomes: list[GeneratedImage | Exception | None] = [None] * len(jobs)
        for call in plan_pipeline_calls(jobs, self.backend.batch_size, fixed_batch=self.backend.fixed_batch):
            started = self._call_started = time.perf_counter()
            self._images_in_call = len(call.positions)
            waits_ms = [round((started - self._pending_images.get(id(jobs[position]), started)) * 1000)
                        for position in call.positions]
            try:
                images = await loop.run_in_executor(self._pipeline_thread, self.backend.generate, call.jobs)
            except Exception as error:  # noqa: BLE001 - reported per request as a 500, counted for health
                logger.exception("pipeline call failed for %d image(s)", len(call.positions))
                self._failures_in_a_row += 1
                for position in call.positions:
                    outcomes[position] = error
                continue
            finally:
                self._call_started, self._images_in_call = None, 0
                for job in call.jobs:
                    self._pending_images.pop(id(job), None)
            self._failures_in_a_row = 0
            elapsed = time.perf_counter() - started
            # A short memory (weight 0.3 for the newest call) follows load changes within a few calls.
            size = len(call.jobs)
            previous = self._call_seconds.get(size)
            self._call_seconds[size] = elapsed if previous is None else 0.7 * previous + 0.3 * elapsed
            elapsed_ms = round(elapsed * 1000)
            for position, image, wait_ms in zip(call.positions, images, waits_ms):
                outcomes[position] = GeneratedImage(image, elapsed_ms, len(call.positions), wait_ms)
        return outcomes

    async def _encode(self, image, output_format: str, *, as_base64: bool = False) -> bytes | str:
        """Encode in the encoder pool; ``as_base64`` too (megabytes of base64 would stall the event loop)."""

        def work():
            data = encode_image(image, output_format, self.encoder_settings)
            return base64.b64encode(data).decode("ascii") if as_base64 else data

        return await asyncio.get_running_loop().run_in_executor(self._encoder_threads, work)
