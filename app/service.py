"""The ``SDXLService`` Ray Serve deployment: the wiring between HTTP, the request parser and the backend.

Routes (relative to the application's route prefix, ``/serve`` in the chart and locally):

* ``GET  /imagine``                 image bytes; query fields from :data:`app.api.REQUEST_FIELDS`
* ``POST /v1/images/generations``   OpenAI Images API shape, ``b64_json`` only
* ``POST /v1/images/edits``         OpenAI's multipart edit: img2img, or inpainting with a mask
* ``GET  /healthz``                 200 when the model is loaded and working, else 503
* ``GET  /info``                    backend, model, sizes and each route's request JSON Schema

Where things live: HTTP plumbing (routes, API key, body limits, the error shape) in ``app.http``; request
fields and parsing in ``app.api``; the pipeline's queue and timing in ``app.scheduling`` (with the pure
rules in ``app.batching``); loading and calling the model in ``app.backends``; metrics and the access log
in ``app.metrics`` (told when a request is answered, a pipeline call ends, an image is encoded). The
replica's event loop only parses, queues and answers: the pipeline runs in a single dedicated thread (one
model, one call at a time) and encoding in a second pool, so health checks and queueing keep answering
while an image renders.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve.config import BackpressureConfig
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api import Rules, parse_edit_form, parse_imagine_query, parse_openai_body, request_schema
from app.batching import plan_pipeline_calls
from app.config import MEDIA_TYPES, deployment_warnings, parse_app_args, read_api_key
from app.encoding import EncoderSettings, encode_image
from app.http import (
    RETRY_AFTER_S,
    ROUTES,
    ApiError,
    authorize,
    error_response,
    not_ready,
    read_json,
    resolve_route,
    route_path,
)
from app.jobs import GenerationRequest, ImageJob
from app.metrics import ReplicaMetrics, current_request
from app.scheduling import PipelineState
from app.uploads import read_multipart

logger = logging.getLogger("ray.serve")

#: Failed pipeline calls in a row after which the replica reports itself unhealthy so Serve replaces it
#: (a wedged accelerator fails every call; one odd failure should not cost a replica).
UNHEALTHY_AFTER_FAILURES = 3


@dataclass(frozen=True)
class GeneratedImage:
    image: Any  # PIL.Image.Image
    generation_ms: int
    #: Requested images the pipeline call made together with this one (itself included; padding not).
    batch_images: int
    #: From the image's arrival in the replica to the start of the pipeline call that made it.
    queue_wait_ms: int


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
        self.api_key = read_api_key(self.args.api_key_env)
        self.encoder_settings = EncoderSettings.from_args(self.args)
        self._pipeline_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdxl-pipeline")
        self._encoder_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sdxl-encode")
        self._failures_in_a_row = 0
        self.backend = None
        self.metrics = ReplicaMetrics(enabled=self.args.metrics, log_prompts=self.args.log_prompts, routes=ROUTES)

        from app.backends import load_backend

        started = time.perf_counter()
        backend = load_backend(self.args)
        self.load_s = round(time.perf_counter() - started, 3)
        self.rules = Rules(
            self.args,
            guidance_must_exceed=backend.guidance_must_exceed,
            tasks=backend.tasks,
            why_no_editing=backend.why_no_editing,
        )
        self.pipeline = PipelineState(backend.batch_size)
        # Gather at most one pipeline call's worth of images per batch: a larger gather would make the
        # first compatible group wait for every other group in the same batch.
        self._generate_batch.set_max_batch_size(backend.batch_size)
        self.warmup_s = self._warm_up(backend) if self.args.warmup else None
        self.backend = backend
        self.metrics.loaded(load_s=self.load_s, warmup_s=self.warmup_s, batch_size=backend.batch_size)
        self.metrics.health(healthy=True, failures_in_a_row=0)
        logger.info(
            "SDXLService ready: backend=%s model=%s load_s=%s warmup_s=%s",
            self.args.backend,
            self.args.model_id,
            self.load_s,
            self.warmup_s,
        )

    def _warm_up(self, backend) -> float:
        # The first call initialises the runtime and loads the graphs (several times slower on Neuron): pay it
        # before the replica reports healthy, at the default size and steps (padded to a fixed compiled batch).
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
        with self.metrics.request(route_path(request.scope)) as record:
            try:
                response = await self._dispatch(request)
                record.answered(response.status_code, record.code)
                return response
            except ApiError as error:
                record.answered(error.status, error.code)
                return error_response(error)
            except Exception:
                logger.exception("unhandled error for %s %s", request.method, request.url.path)
                record.answered(500, "internal_error")
                return error_response(ApiError(500, "internal error (see the replica's log)", code="internal_error"))

    async def _dispatch(self, request: Request) -> Response:
        path = resolve_route(request)
        if path == "/healthz":
            health = self._healthz()
            return Response(status_code=health.status_code) if request.method == "HEAD" else health
        if path == "/info":
            return JSONResponse(self.info())
        authorize(request, self.api_key)
        if not self.healthy:
            raise not_ready()
        if path == "/imagine":
            return await self._imagine(request)
        if path == "/v1/images/edits":
            return await self._images_edits(request)
        return await self._images_generations(request)

    def _healthz(self) -> Response:
        body = {
            "status": "ok" if self.healthy else "unavailable",
            "backend": self.args.backend,
            "model_id": self.args.model_id,
            "images_in_flight": self.pipeline.images_in_flight,
        }
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
            "tasks": list(self.rules.tasks),
            "max_body_bytes": args.max_body_bytes,
            "max_upload_bytes": args.max_upload_bytes,
            "auth_required": self.api_key is not None,
            "request_schema": request_schema(self.rules),
            "backend_details": self.backend.details,
            "warnings": self.warnings,
            "load_s": self.load_s,
            "warmup_s": self.warmup_s,
        }

    async def _imagine(self, request: Request) -> Response:
        parsed = parse_imagine_query(request.query_params.multi_items(), self.rules)
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
        parsed = parse_openai_body(await read_json(request, self.args.max_body_bytes), self.rules)
        return await self._images_response(parsed)

    async def _images_edits(self, request: Request) -> Response:
        upload = await read_multipart(request, self.args.max_upload_bytes)
        # Decoding an upload (up to max_upload_pixels) is CPU work: off the event loop, like encoding.
        parsed = await asyncio.get_running_loop().run_in_executor(
            self._encoder_threads, parse_edit_form, upload, self.rules
        )
        return await self._images_response(parsed)

    async def _images_response(self, parsed: GenerationRequest) -> Response:
        """The OpenAI Images API answer (``b64_json``), shared by generations and edits."""
        results = await self._render(parsed)
        encoded = await asyncio.gather(*(self._encode(r.image, parsed.output_format, as_base64=True) for r in results))
        job = parsed.jobs[0]
        return JSONResponse(
            {
                "created": int(time.time()),
                "data": [
                    {"b64_json": data, "seed": image_job.seed}
                    for data, image_job in zip(encoded, parsed.jobs, strict=True)
                ],
                "output_format": parsed.output_format,
                "size": f"{job.width}x{job.height}",
                "steps": job.steps,
                "guidance_scale": job.guidance_scale,
                "generation_time_ms": max(r.generation_ms for r in results),
            }
        )

    # ---------------------------------------------------------------------------------------------
    # Generation

    async def _render(self, parsed: GenerationRequest) -> list[GeneratedImage]:
        # serve.batch reads the timeout when a batch's first image reaches its queue; requests that
        # arrive together at an idle replica may still share a batch (the later ones see it busy).
        self._generate_batch.set_batch_wait_timeout_s(self.pipeline.batch_wait_s(self.args.batch_wait_timeout_s))
        self.pipeline.arrive(parsed.jobs)
        try:
            # One queue entry per image, so a request for n images shares batches with other requests.
            outcomes = await asyncio.gather(*(self._generate_batch(job) for job in parsed.jobs))
        finally:
            self.pipeline.forget(parsed.jobs)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise ApiError(
                    500, f"image generation failed: {type(outcome).__name__}: {outcome}", code="generation_failed"
                )
        record = current_request()
        if record is not None:
            record.generated(parsed.jobs, parsed.output_format, outcomes)
        return outcomes

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.05)
    async def _generate_batch(self, jobs: list[ImageJob]) -> list[GeneratedImage | Exception]:
        loop = asyncio.get_running_loop()
        outcomes: list[GeneratedImage | Exception | None] = [None] * len(jobs)
        for call in plan_pipeline_calls(jobs, self.backend.batch_size, fixed_batch=self.backend.fixed_batch):
            waits_ms = self.pipeline.call_started(call, jobs)
            try:
                images = await loop.run_in_executor(self._pipeline_thread, self.backend.generate, call.jobs)
            except Exception as error:
                elapsed_s = self.pipeline.call_ended(call, succeeded=False)
                logger.exception("pipeline call failed for %d image(s)", len(call.positions))
                self._failures_in_a_row += 1
                self._pipeline_call_done(call, elapsed_s, waits_ms, succeeded=False)
                for position in call.positions:
                    outcomes[position] = error
                continue
            elapsed_s = self.pipeline.call_ended(call, succeeded=True)
            elapsed_ms = round(elapsed_s * 1000)
            self._failures_in_a_row = 0
            self._pipeline_call_done(call, elapsed_s, waits_ms, succeeded=True)
            # A call padded to the compiled batch returns an image per padded job too; those have no position.
            for position, image, wait_ms in zip(call.positions, images, waits_ms, strict=False):
                outcomes[position] = GeneratedImage(image, elapsed_ms, len(call.positions), wait_ms)
        return outcomes

    def _pipeline_call_done(self, call, elapsed_s: float, waits_ms: list[int], *, succeeded: bool) -> None:
        self.metrics.pipeline_call(
            jobs=call.jobs, answered=len(call.positions), seconds=elapsed_s, waits_ms=waits_ms, succeeded=succeeded
        )
        self.metrics.health(healthy=self.healthy, failures_in_a_row=self._failures_in_a_row)

    async def _encode(self, image, output_format: str, *, as_base64: bool = False) -> bytes | str:
        """Encode in the encoder pool; ``as_base64`` too (megabytes of base64 would stall the event loop)."""

        def work():
            started = time.perf_counter()
            data = encode_image(image, output_format, self.encoder_settings)
            seconds = time.perf_counter() - started
            self.metrics.encoded(output_format, seconds)
            return (base64.b64encode(data).decode("ascii") if as_base64 else data), seconds

        data, seconds = await asyncio.get_running_loop().run_in_executor(self._encoder_threads, work)
        record = current_request()
        if record is not None:
            record.encode_ms += seconds * 1000
        return data
