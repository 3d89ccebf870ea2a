"""app/metrics.py without a cluster: label values stay in small fixed sets, and each generation request
leaves one JSON access-log line without its prompt unless log_prompts is set. (The metrics themselves,
through Ray and a real Prometheus: tests/chart/test_chart_monitoring_live.py.)"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from app.http import ROUTES
from app.jobs import ImageJob
from app.metrics import (
    CALL_IMAGES,
    METRICS,
    STEP_RANGES,
    ReplicaMetrics,
    code_label,
    current_request,
    endpoint_label,
    status_class,
    steps_label,
)
from app.service import GeneratedImage

PROMPT = "my neighbour's face, from this photo"


@pytest.fixture
def access_log():
    """Records of the replica logger (Serve may have set it not to propagate in this process)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("ray.serve")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(r.getMessage()) for r in records if r.getMessage().startswith('{"event":"sdxl_request"')]
    logger.removeHandler(handler)
    logger.setLevel(level)


def one_image_request(metrics: ReplicaMetrics, path: str = "/imagine", *, n: int = 1):
    jobs = tuple(ImageJob(PROMPT, None, 41 + i, 30, 5.0, 1024, 1024) for i in range(n))
    results = [GeneratedImage(None, generation_ms=2100, batch_images=2, queue_wait_ms=35) for _ in jobs]
    with metrics.request(path) as record:
        assert current_request() is record
        record.generated(jobs, "webp", results)
        record.encode_ms += 12.5
    assert current_request() is None


def test_labels_take_values_from_small_fixed_sets():
    assert endpoint_label("/imagine", ROUTES) == "/imagine"
    assert endpoint_label("/wp-admin/install.php", ROUTES) == "unmatched"
    assert [status_class(status) for status in (200, 404, 499, 503)] == ["2xx", "4xx", "4xx", "5xx"]
    assert code_label("out_of_range") == "out_of_range"
    assert code_label("Robert'); DROP TABLE") == "other" and code_label("x" * 80) == "other"
    assert {steps_label(steps) for steps in range(1, 1001)} == {
        "1-10",
        "11-20",
        "21-30",
        "31-40",
        "41-50",
        "51-100",
        "101-200",
        "201-500",
        ">500",
    }
    assert steps_label(30) == "21-30" and steps_label(31) == "31-40" and len(STEP_RANGES) < 10


def test_no_metric_has_a_free_text_label_or_one_serve_adds_itself():
    labels = {label for _, (_, names, _) in METRICS.items() for label in names}
    assert labels == {"endpoint", "status_class", "code", "size", "steps", "format"}


def test_images_per_call_buckets_put_each_count_in_a_bucket_whose_midpoint_is_the_count():
    # Ray 2.60 rebuilds _sum from bucket midpoints: (k - 0.5 + k + 0.5) / 2 == k for every batch size 1..16.
    bounds = (0.0, *CALL_IMAGES)
    for count in range(1, 17):
        (index,) = [i for i in range(1, len(bounds)) if bounds[i - 1] < count <= bounds[i]]
        assert (bounds[index - 1] + bounds[index]) / 2 == count


def test_a_generation_request_logs_one_json_line_without_its_prompt(access_log):
    one_image_request(ReplicaMetrics(enabled=False, log_prompts=False, routes=ROUTES), "/v1/images/generations", n=2)
    (line,) = access_log()
    assert line == {
        "event": "sdxl_request",
        "endpoint": "/v1/images/generations",
        "status": 200,
        "code": "ok",
        "images": 2,
        "size": "1024x1024",
        "steps": 30,
        "seed": 41,
        "format": "webp",
        "batch_images": 2,
        "queue_ms": 35,
        "pipeline_ms": 2100,
        "encode_ms": 12.5,
        "total_ms": line["total_ms"],
        "request_id": "",
    }
    assert PROMPT not in json.dumps(line)


def test_log_prompts_puts_the_prompt_in_the_line(access_log):
    one_image_request(ReplicaMetrics(enabled=False, log_prompts=True, routes=ROUTES))
    (line,) = access_log()
    assert line["prompt"] == PROMPT


def test_errors_are_logged_with_their_code_and_probes_are_not_logged(access_log):
    metrics = ReplicaMetrics(enabled=False, log_prompts=False, routes=ROUTES)
    with metrics.request("/imagine") as record:
        record.answered(400, "out_of_range")
    for probe in ("/healthz", "/info"):
        with metrics.request(probe):
            assert current_request() is None
    (line,) = access_log()
    assert (line["status"], line["code"], line["images"], line["size"]) == (400, "out_of_range", 0, None)


def test_a_request_whose_client_went_away_is_logged_as_499(access_log):
    metrics = ReplicaMetrics(enabled=False, log_prompts=False, routes=ROUTES)

    async def cancelled():
        with metrics.request("/imagine"):
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled())
    (line,) = access_log()
    assert (line["status"], line["code"]) == (499, "client_disconnected")
