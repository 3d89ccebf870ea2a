"""What the replica tells Prometheus and its log: SDXL metrics through Ray Serve, and one access-log line per request.

:class:`ReplicaMetrics` is the one object the deployment talks to, at a few points: a request arrives and is
answered (:meth:`ReplicaMetrics.request`, a context manager around the whole request), a pipeline call ends
(:meth:`ReplicaMetrics.pipeline_call`), an image is encoded (:meth:`ReplicaMetrics.encoded`), health changes
(:meth:`ReplicaMetrics.health`). Everything a request learns on its way (images, size, seed, waits) goes into
its :class:`RequestRecord`, reachable from any coroutine of that request through :func:`current_request`,
so a new route needs no change here: its endpoint comes from the resolved path, its error code from
``ApiError.code``.

The metrics are ``ray.serve.metrics`` Counters, Histograms and Gauges, exported on every Ray node's
metrics port (the chart's ``metrics-export-port`` 8080) as ``ray_sdxl_*``. Serve adds the labels
``deployment``, ``replica`` and ``application`` itself. Our labels are bounded by construction (no prompt,
no seed, no free text), see :data:`METRICS`:

* ``endpoint``: one of the routes the app serves (``app.http.ROUTES``) or ``unmatched`` (a 404); not
  Serve's ``route`` label, which for this app is always the route prefix (``/serve``).
* ``status_class``: ``2xx``, ``4xx`` or ``5xx``.
* ``code``: ``ok`` or the error body's ``code`` (a fixed set of identifiers in the code; anything that
  does not look like one is counted as ``other``).
* ``size``: ``WxH``, one of the deployment's ``image_sizes`` (the parser refuses any other).
* ``steps``: a range of denoising steps (:data:`STEP_RANGES`), not the number.
* ``format``: ``png``, ``jpeg`` or ``webp``.

With ``AppArgs.metrics`` false the recorder keeps the access log and records no metric (the switch the
overhead benchmark, ``bench/metrics_overhead.py``, flips).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ray.serve import context as serve_context

#: Routes that are not metered: probes and the description, polled by load balancers and the UI; counting
#: them would drown the generation traffic in ratios and percentiles.
UNMETERED_ROUTES = frozenset({"/healthz", "/info"})
UNMATCHED = "unmatched"

#: Upper bounds of the ``steps`` label's ranges; a call with more steps than the last is ``>500``.
STEP_RANGES = (10, 20, 30, 40, 50, 100, 200, 500)

#: Histogram buckets, seconds. Pipeline calls: ~0.05 s (embedded model on a CPU) to minutes (a batch of
#: 1024x1024 SDXL images at 50 steps on a CPU); an inf2 SDXL image at 30 steps takes a few seconds.
CALL_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)
REQUEST_SECONDS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)
QUEUE_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
ENCODE_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
#: Images per pipeline call (1..16, AppArgs.batch_size): one bucket per count, bounded half-way between
#: counts. Ray 2.60's metrics agent rebuilds a histogram's ``_sum`` from bucket midpoints
#: (ray/_private/telemetry/open_telemetry_metric_recorder.py), so only these bounds make ``_sum`` exact and
#: ``_sum / _count`` the true mean batch. Every other histogram's ``_sum`` is approximate: use its buckets.
CALL_IMAGES = tuple(count + 0.5 for count in range(17))  # 0.5, 1.5, ..., 16.5

#: Seconds between re-reports of the gauges. Ray drops a gauge series that was not set again for about
#: 20 s (measured with Ray 2.60: a value set once disappears from /metrics), so they are set again well
#: within that.
GAUGE_REFRESH_S = 5.0

#: name -> (kind, labels, description). Exported as ``ray_<name>`` (counters with ``_total``, histograms
#: with ``_bucket``/``_sum``/``_count``); README's metric table is checked against this one.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sdxl_requests": (
        "counter",
        ("endpoint", "status_class", "code"),
        "Requests answered by the replica (probes /healthz and /info not counted).",
    ),
    "sdxl_request_seconds": (
        "histogram",
        ("endpoint", "status_class"),
        "Seconds from a request's arrival in the replica to its answer.",
    ),
    "sdxl_images": ("counter", ("endpoint", "size", "format"), "Images generated and answered."),
    "sdxl_pipeline_call_seconds": ("histogram", ("size", "steps"), "Seconds per successful pipeline call."),
    "sdxl_pipeline_call_images": ("histogram", (), "Requested images per pipeline call (padding not counted)."),
    "sdxl_pipeline_padding_images": ("counter", (), "Padding images computed and dropped (fixed Neuron batch)."),
    "sdxl_pipeline_failures": ("counter", (), "Pipeline calls that raised."),
    "sdxl_pipeline_failures_in_a_row": ("gauge", (), "Consecutive failed pipeline calls (unhealthy at 3)."),
    "sdxl_queue_wait_seconds": (
        "histogram",
        (),
        "Seconds per image from its arrival in the replica to the start of its pipeline call.",
    ),
    "sdxl_encode_seconds": ("histogram", ("format",), "Seconds to encode one image."),
    "sdxl_replica_healthy": ("gauge", (), "1 while the replica's model is loaded and working, else 0."),
    "sdxl_batch_size": ("gauge", (), "Images one pipeline call can take (the backend's batch size)."),
    "sdxl_model_load_seconds": ("gauge", (), "Seconds the replica took to load its model."),
    "sdxl_warmup_seconds": ("gauge", (), "Seconds of the replica's warm-up generation (0 without warm-up)."),
}

_BUCKETS = {
    "sdxl_request_seconds": REQUEST_SECONDS,
    "sdxl_pipeline_call_seconds": CALL_SECONDS,
    "sdxl_pipeline_call_images": CALL_IMAGES,
    "sdxl_queue_wait_seconds": QUEUE_SECONDS,
    "sdxl_encode_seconds": ENCODE_SECONDS,
}

_CODE = re.compile(r"^[a-z][a-z_]{0,39}$")

access_logger = logging.getLogger("ray.serve")


def endpoint_label(path: str, routes) -> str:
    return path if path in routes else UNMATCHED


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def code_label(code: str) -> str:
    return code if _CODE.match(code) else "other"


def steps_label(steps: int) -> str:
    lower = 1
    for upper in STEP_RANGES:
        if steps <= upper:
            return f"{lower}-{upper}"
        lower = upper + 1
    return f">{STEP_RANGES[-1]}"


@dataclass
class RequestRecord:
    """What one request did, filled in on its way; becomes its metrics and its access-log line."""

    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    status: int = 200
    code: str = "ok"
    images: int = 0
    size: str | None = None
    steps: int | None = None
    seed: int | None = None
    output_format: str | None = None
    prompt: str | None = None
    #: Largest over the request's images: images in the pipeline call that made one, its queue wait, the call's ms.
    batch_images: int = 0
    queue_wait_ms: int = 0
    pipeline_ms: int = 0
    encode_ms: float = 0.0

    def answered(self, status: int, code: str) -> None:
        self.status, self.code = status, code

    def generated(self, jobs, output_format: str, results) -> None:
        """The request's images are made: ``jobs`` (app.jobs.ImageJob) and their ``GeneratedImage`` results."""
        first = jobs[0]
        self.images, self.size, self.steps = len(jobs), f"{first.width}x{first.height}", first.steps
        self.seed, self.output_format, self.prompt = first.seed, output_format, first.prompt
        self.batch_images = max(result.batch_images for result in results)
        self.queue_wait_ms = max(result.queue_wait_ms for result in results)
        self.pipeline_ms = max(result.generation_ms for result in results)


_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("sdxl_request", default=None)


def current_request() -> RequestRecord | None:
    """The record of the request whose coroutine is running (None outside a metered request)."""
    return _current.get()


class ReplicaMetrics:
    """The replica's metrics and access log. ``enabled=False``: access log only (no metric is created)."""

    def __init__(self, *, enabled: bool, log_prompts: bool, routes):
        self.enabled = enabled
        self.log_prompts = log_prompts
        self.routes = frozenset(routes)
        self._metrics: dict = {}
        self._gauges: dict[str, float] = {}
        self._gauges_lock = threading.Lock()
        if enabled:
            from ray.serve.metrics import Counter, Gauge, Histogram

            for name, (kind, labels, description) in METRICS.items():
                if kind == "counter":
                    self._metrics[name] = Counter(name, description=description, tag_keys=labels)
                elif kind == "gauge":
                    self._metrics[name] = Gauge(name, description=description, tag_keys=labels)
                else:
                    self._metrics[name] = Histogram(
                        name, description=description, boundaries=list(_BUCKETS[name]), tag_keys=labels
                    )
            threading.Thread(target=self._refresh_gauges, name="sdxl-metrics-gauges", daemon=True).start()

    # -- replica lifecycle

    def loaded(self, *, load_s: float, warmup_s: float | None, batch_size: int) -> None:
        self._set_gauges(
            sdxl_model_load_seconds=load_s, sdxl_warmup_seconds=warmup_s or 0.0, sdxl_batch_size=batch_size
        )

    def health(self, *, healthy: bool, failures_in_a_row: int) -> None:
        """Called once the model is loaded and after every pipeline call (no series while loading)."""
        self._set_gauges(sdxl_replica_healthy=1 if healthy else 0, sdxl_pipeline_failures_in_a_row=failures_in_a_row)

    def _set_gauges(self, **values: float) -> None:
        if not self.enabled:
            return
        with self._gauges_lock:
            changed = {name: value for name, value in values.items() if self._gauges.get(name) != value}
            self._gauges.update(values)
        for name, value in changed.items():
            self._metrics[name].set(value)

    def _refresh_gauges(self) -> None:
        while True:
            time.sleep(GAUGE_REFRESH_S)
            with self._gauges_lock:
                current = dict(self._gauges)
            for name, value in current.items():
                self._metrics[name].set(value)

    # -- requests

    @contextlib.contextmanager
    def request(self, path: str) -> Iterator[RequestRecord]:
        """Around one request for ``path`` (relative to the route prefix): yields its record, on which the
        caller notes an error answer (:meth:`RequestRecord.answered`); on exit the request is counted and
        logged. A probe's record is neither."""
        record = RequestRecord(endpoint_label(path, self.routes))
        if path in UNMETERED_ROUTES:
            yield record
            return
        token = _current.set(record)
        try:
            yield record
        except asyncio.CancelledError:
            record.answered(499, "client_disconnected")  # Serve cancels a request whose client went away
            raise
        except BaseException:
            record.answered(500, "internal_error")
            raise
        finally:
            _current.reset(token)
            self._answered(record)

    def _answered(self, record: RequestRecord) -> None:
        seconds = time.perf_counter() - record.started
        klass = status_class(record.status)
        if self.enabled:
            self._metrics["sdxl_requests"].inc(
                tags={"endpoint": record.endpoint, "status_class": klass, "code": code_label(record.code)}
            )
            self._metrics["sdxl_request_seconds"].observe(
                seconds, tags={"endpoint": record.endpoint, "status_class": klass}
            )
            if record.images and record.status < 300:
                self._metrics["sdxl_images"].inc(
                    record.images,
                    tags={"endpoint": record.endpoint, "size": record.size, "format": record.output_format},
                )
        if record.size is not None or record.status >= 400:
            self._access_log(record, seconds)

    def _access_log(self, record: RequestRecord, seconds: float) -> None:
        # Serve's request id (its X-Request-Id header): what Serve's own log lines carry too.
        request_id = serve_context._get_serve_request_context().request_id
        line = {
            "event": "sdxl_request",
            "endpoint": record.endpoint,
            "status": record.status,
            "code": record.code,
            "images": record.images,
            "size": record.size,
            "steps": record.steps,
            "seed": record.seed,
            "format": record.output_format,
            "batch_images": record.batch_images,
            "queue_ms": record.queue_wait_ms,
            "pipeline_ms": record.pipeline_ms,
            "encode_ms": round(record.encode_ms, 1),
            "total_ms": round(seconds * 1000, 1),
            "request_id": request_id,
        }
        if self.log_prompts and record.prompt is not None:
            line["prompt"] = record.prompt
        access_logger.info(json.dumps(line, ensure_ascii=True, separators=(",", ":")))

    # -- the pipeline and the encoder

    def pipeline_call(self, *, jobs, answered: int, seconds: float, waits_ms, succeeded: bool) -> None:
        """One pipeline call over ``jobs`` (padding included) that answered ``answered`` images."""
        if not self.enabled:
            return
        queue = self._metrics["sdxl_queue_wait_seconds"]
        for wait_ms in waits_ms:
            queue.observe(wait_ms / 1000)
        if not succeeded:
            self._metrics["sdxl_pipeline_failures"].inc()
            return
        first = jobs[0]
        self._metrics["sdxl_pipeline_call_seconds"].observe(
            seconds, tags={"size": f"{first.width}x{first.height}", "steps": steps_label(first.steps)}
        )
        self._metrics["sdxl_pipeline_call_images"].observe(answered)
        if len(jobs) > answered:
            self._metrics["sdxl_pipeline_padding_images"].inc(len(jobs) - answered)

    def encoded(self, output_format: str, seconds: float) -> None:
        """One image encoded (called from the encoder thread)."""
        if self.enabled:
            self._metrics["sdxl_encode_seconds"].observe(seconds, tags={"format": output_format})
