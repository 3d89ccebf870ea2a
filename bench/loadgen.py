"""A small closed-loop HTTP load generator shared by the benchmark and the reliability tests.

Closed loop: ``concurrency`` clients each send a request, wait for the whole answer, and send the
next, so the offered load adapts to the service instead of queueing without bound in the client.
Every request is recorded (start, end, status, headers that matter) so callers can compute their
own figures; :func:`summarise` gives the usual ones.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx


@dataclass
class Sample:
    started: float  # time.monotonic() when the request was sent
    finished: float
    status: int  # HTTP status, or 0 when the client gave up (timeout) or the connection failed
    error: str = ""
    nbytes: int = 0
    retry_after: str | None = None
    generation_ms: float | None = None  # X-Generation-Time-Ms when the service reports it
    batch_size: int | None = None  # X-Batch-Size: images the pipeline call that made this one ran together

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass
class RunResult:
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: with few samples p99 is the worst one, said plainly)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarise(run: RunResult) -> dict:
    ok = [s for s in run.samples if s.status == 200]
    latencies = [s.latency for s in ok]
    statuses: dict[str, int] = {}
    for s in run.samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    gen = [s.generation_ms for s in ok if s.generation_ms is not None]
    batches = [s.batch_size for s in ok if s.batch_size is not None]
    return {
        "requests": len(run.samples),
        "ok": len(ok),
        "statuses": statuses,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "mean_s": statistics.fmean(latencies) if latencies else math.nan,
        "max_s": max((s.latency for s in run.samples), default=math.nan),
        "throughput_rps": len(ok) / run.wall_s if run.wall_s > 0 else math.nan,
        "mean_bytes": statistics.fmean([s.nbytes for s in ok]) if ok else math.nan,
        "service_generation_p50_ms": percentile(gen, 50) if gen else None,
        # Averaged over images: the batch an image was generated in, as the service reports it.
        "mean_batch_size": statistics.fmean(batches) if batches else None,
    }


RequestFactory = Callable[[int], tuple[str, str, dict]]
"""Given a request index, return ``(method, url, httpx request kwargs)``."""


async def _one(client: httpx.AsyncClient, method: str, url: str, kwargs: dict) -> Sample:
    started = time.monotonic()
    try:
        response = await client.request(method, url, **kwargs)
        body = response.content
        gen = response.headers.get("x-generation-time-ms")
        batch = response.headers.get("x-batch-size")
        return Sample(
            started=started,
            finished=time.monotonic(),
            status=response.status_code,
            nbytes=len(body),
            retry_after=response.headers.get("retry-after"),
            generation_ms=float(gen) if gen else None,
            batch_size=int(batch) if batch and batch.isdigit() else None,
            error="" if response.status_code == 200 else body[:300].decode("utf-8", "replace"),
        )
    except (httpx.TimeoutException, httpx.TransportError) as error:
        return Sample(started=started, finished=time.monotonic(), status=0, error=f"{type(error).__name__}: {error}")


async def run_closed_loop(
    make_request: RequestFactory,
    *,
    concurrency: int,
    total_requests: int | None = None,
    duration_s: float | None = None,
    timeout_s: float = 120.0,
    backoff_on_503_s: float | None = None,
    backoff_on_error_s: float | None = None,
    stop: Callable[[], bool] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> RunResult:
    """Run ``concurrency`` clients until ``total_requests`` were sent, ``duration_s`` elapsed or ``stop()``.

    ``backoff_on_503_s``: after a 503 a client waits ``min(Retry-After, backoff_on_503_s)`` before its
    next request, as a polite client would (capped so that a bounded run keeps pressure on).
    ``backoff_on_error_s``: after a failed connection or a timeout a client waits this long, so that a
    service that refuses connections is not hammered in a tight loop.
    ``stop``: checked before each request; the run ends once it returns True (in-flight requests finish).
    ``on_sample``: called with each sample as it is recorded (to watch a run while it goes on).
    """
    if total_requests is None and duration_s is None and stop is None:
        raise ValueError("give total_requests, duration_s or stop")
    result = RunResult(concurrency=concurrency)
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    deadline = None
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) as client:
        began = time.monotonic()
        if duration_s is not None:
            deadline = began + duration_s

        async def worker() -> None:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if stop is not None and stop():
                    return
                index = next(counter)
                if total_requests is not None and index >= total_requests:
                    return
                method, url, kwargs = make_request(index)
                sample = await _one(client, method, url, kwargs)
                result.samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
                if sample.status == 503 and backoff_on_503_s is not None:
                    try:
                        wait = float(sample.retry_after or 0)
                    except ValueError:
                        wait = 0.0
                    await asyncio.sleep(min(max(wait, 0.0), backoff_on_503_s))
                elif sample.status == 0 and backoff_on_error_s is not None:
                    await asyncio.sleep(backoff_on_error_s)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall_s = time.monotonic() - began
    return result


def run_sync(make_request: RequestFactory, **kwargs) -> RunResult:
    return asyncio.run(run_closed_loop(make_request, **kwargs))


async def run_in_rotation(
    factories: dict[str, RequestFactory],
    *,
    rounds: int,
    timeout_s: float = 120.0,
    between: Callable[[], None] | None = None,
) -> dict[str, RunResult]:
    """One request at a time, to each target in turn (``rounds`` times); ``between`` runs after each round.

    Each target keeps one kept-alive connection, as a real client does, so that neither pays for
    connecting (or this process for building a client) inside its latency.
    """
    results = {name: RunResult(concurrency=1) for name in factories}
    clients = {name: httpx.AsyncClient(timeout=httpx.Timeout(timeout_s)) for name in factories}
    try:
        for index in range(rounds):
            for name, factory in factories.items():
                method, url, kwargs = factory(index)
                sample = await _one(clients[name], method, url, kwargs)
                results[name].samples.append(sample)
                results[name].wall_s += sample.latency
            if between is not None:
                between()
    finally:
        for client in clients.values():
            await client.aclose()
    return results


class AdjustableLoad:
    """Closed-loop clients whose number can change while the run goes on (a ramp, a hold, a stop).

    Run :meth:`run` in an event loop (any thread); from any thread, :meth:`set_clients` changes how
    many clients send (a client above the count finishes its request, then idles) and :meth:`stop`
    ends the run once every in-flight request has its answer. ``in_flight`` and ``samples`` are
    readable at any time, so a sampler can watch the run second by second.
    """

    def __init__(
        self,
        make_request: RequestFactory,
        *,
        max_clients: int,
        timeout_s: float,
        backoff_on_503_s: float | None = None,
    ) -> None:
        self.make_request = make_request
        self.max_clients = max_clients
        self.timeout_s = timeout_s
        self.backoff_on_503_s = backoff_on_503_s
        self.clients = 0
        self.in_flight = 0
        self.samples: list[Sample] = []
        self._stopping = False
        self._counter = iter(range(10**9))

    def set_clients(self, count: int) -> None:
        self.clients = max(0, min(count, self.max_clients))

    def stop(self) -> None:
        self.clients = 0
        self._stopping = True

    async def _client(self, client: httpx.AsyncClient, slot: int) -> None:
        while not self._stopping:
            if slot >= self.clients:
                await asyncio.sleep(0.05)
                continue
            method, url, kwargs = self.make_request(next(self._counter))
            self.in_flight += 1
            try:
                sample = await _one(client, method, url, kwargs)
            finally:
                self.in_flight -= 1
            self.samples.append(sample)
            if sample.status == 503 and self.backoff_on_503_s is not None:
                try:
                    wait = float(sample.retry_after or 0)
                except ValueError:
                    wait = 0.0
                await asyncio.sleep(min(max(wait, 0.0), self.backoff_on_503_s))

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.max_clients + 4, max_keepalive_connections=self.max_clients + 4)
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), limits=limits) as client:
            await asyncio.gather(*(self._client(client, slot) for slot in range(self.max_clients)))
