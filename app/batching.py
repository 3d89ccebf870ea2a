"""Grouping queued images into pipeline calls (pure functions, unit-tested without a model).

``@serve.batch`` hands the replica one list of queued :class:`~app.api.ImageJob`s. A pipeline call has
a single step count, size and guidance scale, so the list is partitioned by ``batch_key`` (never
mixing incompatible jobs), each group is cut to the backend's batch size, and for a backend with a
fixed compiled batch (Neuron) the last chunk is padded by repeating its last job; the padded images are
computed and dropped. :func:`batch_wait_s` decides how long a forming batch waits for partners.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Batchable(Protocol):
    @property
    def batch_key(self) -> Hashable: ...


JobT = TypeVar("JobT", bound=Batchable)


@dataclass(frozen=True)
class PipelineCall:
    """One pipeline invocation: ``jobs`` (maybe padded) and which positions in the original batch they answer."""

    jobs: tuple
    #: ``positions[i]`` is the index in the ``@serve.batch`` list that ``jobs[i]`` answers; padding has none.
    positions: tuple[int, ...]

    @property
    def padding(self) -> int:
        return len(self.jobs) - len(self.positions)


def partition_compatible(jobs: Sequence[JobT]) -> list[list[int]]:
    """Indices of ``jobs`` grouped by ``batch_key``, groups in order of first arrival."""
    groups: dict[Hashable, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(job.batch_key, []).append(index)
    return list(groups.values())


def plan_pipeline_calls(jobs: Sequence[JobT], batch_size: int, *, fixed_batch: bool) -> list[PipelineCall]:
    """Split ``jobs`` into pipeline calls of at most ``batch_size`` compatible jobs.

    With ``fixed_batch`` every call has exactly ``batch_size`` jobs (a compiled Neuron graph accepts no
    other shape): a short chunk is padded by repeating its last job.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    calls = []
    for group in partition_compatible(jobs):
        for start in range(0, len(group), batch_size):
            positions = tuple(group[start : start + batch_size])
            chunk = [jobs[i] for i in positions]
            if fixed_batch:
                chunk += [chunk[-1]] * (batch_size - len(chunk))
            calls.append(PipelineCall(jobs=tuple(chunk), positions=positions))
    return calls


def batch_wait_s(
    *,
    images_in_flight: int,
    images_in_call: int,
    call_elapsed_s: float | None,
    call_seconds: Mapping[int, float],
    batch_size: int,
    cap_s: float,
) -> float:
    """How long a batch that starts forming now should wait for partners: only while the pipeline is busy.

    An idle replica (nothing queued or running) starts at once: waiting for partners that may never
    come would add the wait to every request of a quiet service. While the pipeline is busy, a new
    batch cannot start before the running call and the batches already queued behind it are done, so
    it collects partners until then, estimated from recent call durations, and never longer than
    ``cap_s``.

    ``images_in_flight``: images queued for or inside the pipeline (the newcomer not included);
    ``images_in_call`` / ``call_elapsed_s``: the running call (0 / ``None`` when none runs);
    ``call_seconds``: recent duration of a call by its number of images.
    """
    if images_in_flight == 0:
        return 0.0
    if not call_seconds:
        return cap_s  # busy, but no call has been timed yet

    def expected(images: int) -> float:
        nearest = min(call_seconds, key=lambda size: (abs(size - images), -size))
        return call_seconds[nearest]

    busy_for = 0.0
    if call_elapsed_s is not None:
        busy_for += expected(images_in_call) - call_elapsed_s
    full_calls, rest = divmod(images_in_flight - images_in_call, batch_size)
    busy_for += full_calls * expected(batch_size) + (expected(rest) if rest else 0.0)
    return min(max(busy_for, 0.0), cap_s)
