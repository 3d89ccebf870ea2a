"""CONTRACT TESTS WITH A FAKE ``optimum.neuron`` — they prove wiring, not Inferentia2.

Neither the Neuron SDK nor Inferentia2 exists on CI machines. ``tests/support/fake_neuron`` stands in for
optimum-neuron's ``NeuronStableDiffusionXLPipeline`` (it renders with the embedded diffusers model and
enforces a compiled batch size and image size like a compiled graph does). These tests show that the
neuron backend loads through ``from_pretrained`` with the pinned revision, reads the compiled shapes,
refuses a configuration that does not match them with a message naming the field, pads requests to the
compiled batch, and that Ray hands each replica its NeuronCores via ``NEURON_RT_VISIBLE_CORES``. Whether
the real SDK renders SDXL on a NeuronCore pair is only proven on an inf2 node.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.config import parse_app_args
from tests.support.serve_cluster import api_application, deploy_config, embedded_model_dir, local_serve

FAKE_NEURON_DIR = Path(__file__).resolve().parents[1] / "support" / "fake_neuron"
NEURON_ARGS = {
    "model_id": "embedded",
    "model_revision": "sdk-2.26",
    "backend": "neuron",
    "image_sizes": ["128x128"],
    "batch_size": 2,
    "neuron_cores_per_replica": 2,
    "default_steps": 3,
    "batch_wait_timeout_s": 0.05,
}
FAKE_ENV = {"PYTHONPATH": str(FAKE_NEURON_DIR), "FAKE_NEURON_BATCH_SIZE": "2", "FAKE_NEURON_SIZE": "128x128"}
# A second copy whose fake NeuronCores fail every call while this file exists (only that copy sees the variable).
WEDGED_FLAG = Path(tempfile.gettempdir()) / f"sdxl-fake-neuron-wedged-{os.getpid()}"
WEDGED_APP = api_application(
    {**NEURON_ARGS, "warmup": False},
    {
        # The test calls check_health itself; Serve must not replace the replica while it looks.
        "health_check_period_s": 3600,
        "ray_actor_options": {"num_cpus": 1, "resources": {"neuron_cores": 2},
                              "runtime_env": {"env_vars": {"FAKE_NEURON_FAIL_FLAG": str(WEDGED_FLAG)}}},
    },
    name="wedged",
    route_prefix="/wedged",
)


# --------------------------------------------------------------------------------------------------
# In process: the adapter's checks against the compiled shapes


@pytest.fixture
def fake_neuron(monkeypatch):
    """Inject the fake ``optimum.neuron`` into this process's ``sys.modules``."""
    for name in [m for m in sys.modules if m == "optimum" or m.startswith("optimum.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKE_NEURON_DIR))
    monkeypatch.setenv("FAKE_NEURON_BATCH_SIZE", "2")
    monkeypatch.setenv("FAKE_NEURON_SIZE", "128x128")
    # What Ray exports for a replica holding neuron_cores=2.
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "0,1")
    import optimum.neuron

    assert optimum.neuron.IS_FAKE
    optimum.neuron.NeuronStableDiffusionXLPipeline.loads.clear()
    yield optimum.neuron
    for name in [m for m in sys.modules if m == "optimum" or m.startswith("optimum.")]:
        del sys.modules[name]


def load_neuron_backend(**overrides):
    from app.backends.neuron import NeuronBackend

    return NeuronBackend(parse_app_args({**NEURON_ARGS, **overrides}), str(embedded_model_dir()))


def test_neuron_backend_loads_the_pinned_revision_and_reads_the_compiled_shape(fake_neuron):
    backend = load_neuron_backend()
    assert fake_neuron.NeuronStableDiffusionXLPipeline.loads == [
        {"model_id": str(embedded_model_dir()), "revision": "sdk-2.26"}
    ]
    assert (backend.batch_size, backend.fixed_batch) == (2, True)
    assert backend.details["compiled_size"] == "128x128"


def test_neuron_backend_refuses_a_batch_size_other_than_the_compiled_one(fake_neuron):
    with pytest.raises(ValueError, match=r"batch_size is 4 .* compiled for batch size 2"):
        load_neuron_backend(batch_size=4)


def test_neuron_backend_refuses_an_image_size_other_than_the_compiled_one(fake_neuron):
    with pytest.raises(ValueError, match=r"image_sizes is \['64x64'\] .* compiled for 128x128"):
        load_neuron_backend(image_sizes=["64x64"])


def test_neuron_backend_refuses_a_model_compiled_for_several_images_per_prompt(fake_neuron, monkeypatch):
    # One prompt must give one image, or a request's seed would not decide its image alone.
    monkeypatch.setenv("FAKE_NEURON_IMAGES_PER_PROMPT", "2")
    with pytest.raises(ValueError, match=r"num_images_per_prompt=2"):
        load_neuron_backend()


def test_neuron_backend_refuses_a_core_count_other_than_neuron_cores_per_replica(fake_neuron, monkeypatch):
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "4-7")
    with pytest.raises(ValueError, match=r"neuron_cores_per_replica is 2 .* NEURON_RT_VISIBLE_CORES=4-7"):
        load_neuron_backend()


def test_neuron_backend_refuses_to_start_without_neuron_cores_of_its_own(fake_neuron, monkeypatch):
    # A replica without the neuron_cores resource would see, and fight over, every core of the node.
    monkeypatch.delenv("NEURON_RT_VISIBLE_CORES")
    with pytest.raises(ValueError, match=r"NEURON_RT_VISIBLE_CORES is not set.*resources.neuron_cores=2"):
        load_neuron_backend()
    assert fake_neuron.NeuronStableDiffusionXLPipeline.loads == []  # refused before loading anything


# --------------------------------------------------------------------------------------------------
# Over HTTP on a local Ray that advertises NeuronCores (the fake module reaches replicas via PYTHONPATH)


@pytest.fixture(scope="module")
def neuron_cluster():
    with local_serve(NEURON_ARGS, neuron_cores=4, env=FAKE_ENV, extra_apps=[WEDGED_APP]) as url:
        yield url


@pytest.fixture(scope="module")
def client(neuron_cluster):
    with httpx.Client(base_url=neuron_cluster, timeout=120) as http:
        yield http


def png_pixels(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.size == (128, 128)
    return np.asarray(image, dtype=np.int16)


@pytest.mark.ray
def test_fake_neuron_replica_serves_a_single_request_padded_to_the_compiled_batch(client):
    # The fake raises unless it gets exactly 2 prompts: a 200 for one request means padding happened.
    first = png_pixels(client.get("/imagine", params={"prompt": "a cat", "seed": 9}))
    again = png_pixels(client.get("/imagine", params={"prompt": "a cat", "seed": 9}))
    assert np.array_equal(first, again)


@pytest.mark.ray
def test_fake_neuron_replica_splits_concurrent_requests_into_compiled_batches(client):
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda s: client.get("/imagine", params={"prompt": "a dog", "seed": s}), [1, 2, 3]))
    images = [png_pixels(r) for r in responses]
    assert np.abs(images[0] - images[1]).mean() > 5 and np.abs(images[1] - images[2]).mean() > 5


@pytest.mark.ray
def test_ray_gives_the_replica_the_neuron_cores_it_asked_for(client):
    details = client.get("/info").json()["backend_details"]
    assert details["device"] == "neuron"
    visible = details["visible_cores"]
    assert visible is not None and len(visible.split(",")) == 2, visible


@pytest.mark.ray
def test_a_replica_whose_pipeline_keeps_failing_reports_itself_unhealthy(neuron_cluster, client):
    from ray import serve

    with httpx.Client(base_url=neuron_cluster.root + "/wedged", timeout=120) as wedged:
        assert wedged.get("/healthz").status_code == 200
        WEDGED_FLAG.touch()
        try:
            failures = [wedged.get("/imagine", params={"prompt": "a cat", "seed": seed}) for seed in range(3)]
        finally:
            WEDGED_FLAG.unlink()
        assert [r.status_code for r in failures] == [500] * 3
        assert all(r.json()["error"]["code"] == "generation_failed" for r in failures)
        # Three failed pipeline calls in a row: the replica says so instead of failing each request.
        health = wedged.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        refused = wedged.get("/imagine", params={"prompt": "a cat"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"
        assert int(refused.headers["retry-after"]) > 0
        # And Serve's health check, which replaces unhealthy replicas, sees the same.
        handle = serve.get_deployment_handle("SDXLService", app_name="wedged")
        with pytest.raises(Exception, match="3 pipeline calls failed in a row"):
            handle.check_health.remote().result(timeout_s=60)
    assert client.get("/healthz").status_code == 200  # the other application is untouched


@pytest.mark.ray
def test_a_size_the_model_was_not_compiled_for_fails_the_deploy_naming_image_sizes(neuron_cluster, client):
    mismatched = api_application({**NEURON_ARGS, "image_sizes": ["64x64"]},
                                 {"max_constructor_retry_count": 1}, name="mismatch", route_prefix="/mismatch")
    statuses = deploy_config([api_application(NEURON_ARGS), mismatched], timeout_s=150)
    status, message = statuses["mismatch"]
    assert status == "DEPLOY_FAILED"
    assert "image_sizes is ['64x64']" in message and "compiled for 128x128" in message
    assert client.get("/healthz").status_code == 200
