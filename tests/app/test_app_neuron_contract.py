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
import sys
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
    monkeypatch.delenv("NEURON_RT_VISIBLE_CORES", raising=False)
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


# --------------------------------------------------------------------------------------------------
# Over HTTP on a local Ray that advertises NeuronCores (the fake module reaches replicas via PYTHONPATH)


@pytest.fixture(scope="module")
def neuron_cluster():
    with local_serve(NEURON_ARGS, neuron_cores=4, env=FAKE_ENV) as url:
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
def test_a_size_the_model_was_not_compiled_for_fails_the_deploy_naming_image_sizes(neuron_cluster, client):
    mismatched = api_application({**NEURON_ARGS, "image_sizes": ["64x64"]},
                                 {"max_constructor_retry_count": 1}, name="mismatch", route_prefix="/mismatch")
    statuses = deploy_config([api_application(NEURON_ARGS), mismatched], timeout_s=150)
    status, message = statuses["mismatch"]
    assert status == "DEPLOY_FAILED"
    assert "image_sizes is ['64x64']" in message and "compiled for 128x128" in message
    assert client.get("/healthz").status_code == 200
