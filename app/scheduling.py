"""The replica's view of its pipeline: which images wait or run, since when, and how long calls take.

One :class:`PipelineState` per replica, touched only from its event loop. It answers two questions the
deployment asks: how long a forming batch should wait for partners (:func:`app.batching.batch_wait_s`
with these facts), and how long each image waited before its pipeline call started.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from app.batching import PipelineCall, batch_wait_s
from app.jobs import ImageJob

#: Weight of the newest call in the moving average of call durations: a short memory that follows
#: load changes within a few calls.
_NEWEST_CALL_WEIGHT = 0.3


class PipelineState:
    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        #: id() of every image queued for or inside the pipeline -> perf_counter() of its arrival;
        #: empty: a new image finds the pipeline idle.
        self._arrived: dict[int, float] = {}
        #: perf_counter() when the running call began (None between calls) and its image count.
        self._call_started: float | None = None
        self._images_in_call = 0
        #: Moving average of call durations by the call's image count.
        self._call_seconds: dict[int, float] = {}

    @property
    def images_in_flight(self) -> int:
        return len(self._arrived)

    def arrive(self, jobs: Iterable[ImageJob]) -> None:
        now = time.perf_counter()
        for job in jobs:
            self._arrived[id(job)] = now

    def forget(self, jobs: Iterable[ImageJob]) -> None:
        """Drop images that left without a call (normally each call removes its own as it ends; not if
        the client went away and serve.batch dropped its images before they ran)."""
        for job in jobs:
            self._arrived.pop(id(job), None)

    def batch_wait_s(self, cap_s: float) -> float:
        """How long a batch starting now waits for partners (see :func:`app.batching.batch_wait_s`)."""
        elapsed = None if self._call_started is None else time.perf_counter() - self._call_started
        return batch_wait_s(
            images_in_flight=len(self._arrived),
            images_in_call=self._images_in_call,
            call_elapsed_s=elapsed,
            call_seconds=self._call_seconds,
            batch_size=self.batch_size,
            cap_s=cap_s,
        )

    def call_started(self, call: PipelineCall, batch: Sequence[ImageJob]) -> list[int]:
        """Record that ``call`` starts now; return each answered image's wait since its arrival, in ms."""
        started = self._call_started = time.perf_counter()
        self._images_in_call = len(call.positions)
        return [
            round((started - self._arrived.get(id(batch[position]), started)) * 1000) for position in call.positions
        ]

    def call_ended(self, call: PipelineCall, *, succeeded: bool) -> float:
        """Record that ``call`` is over; return its duration in seconds (learned from only when it succeeded)."""
        elapsed = time.perf_counter() - (self._call_started or time.perf_counter())
        self._call_started, self._images_in_call = None, 0
        self.forget(call.jobs)
        if succeeded:
            size = len(call.jobs)
            previous = self._call_seconds.get(size)
            self._call_seconds[size] = (
                elapsed if previous is None else (1 - _NEWEST_CALL_WEIGHT) * previous + _NEWEST_CALL_WEIGHT * elapsed
            )
        return elapsed
