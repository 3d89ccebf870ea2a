"""CONTRACT TESTS WITH A FAKE ``optimum.neuron`` — they prove wiring, not Inferentia2.

Neither the Neuron SDK nor Inferentia2 exists on CI machines. ``tests/support/fake_neuron`` stands in for
optimum-neuron 0.4.5's ``NeuronStableDiffusionXLPipeline``: it loads a stand-in export (the embedded diffusers
model with the ``"neuron"`` config sections the real exporter writes, ``tests/support/neuron_export.py``),
refuses an uncompiled directory as the real loader does, and enforces the compiled batch, size and the
two-core data-parallel UNet like a compiled graph does. These tests show that the neuron backend loads
through ``from_pretrained`` with the pinned revision, reads the compiled shapes and compiler, refuses a
configuration that does not match them with a message naming the field, pads requests to the compiled
batch (not a dynamic one), keeps requests the compiled batch cannot run away from the pipeline, and that
Ray hands each replica its NeuronCores via ``NEURON_RT_VISIBLE_CORES``. Whether the real SDK renders SDXL on
a NeuronCore pair is only proven on an inf2 node.
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
from app.jobs import ImageJob
from tests.support.neuron_export import SDK_2_26_COMPILER, write_fake_neuron_export
from tests.support.serve_cluster import REPO_ROOT, api_application, deploy_config, embedded_model_dir, local_serve

FAKE_NEURON_DIR = Path(__file__).resolve().parents[1] / "support" / "fake_neuron"
EXPORTS_DIR = REPO_ROOT / ".cache" / "fake-neuron-exports-v2"
#: The compiled size is not square, so a width/height mix-up anywhere on the way shows.
COMPILED_WIDTH, COMPILED_HEIGHT = 128, 64
COMPILED_SIZE = f"{COMPILED_WIDTH}x{COMPILED_HEIGHT}"


def fake_export(batch_size: int = 2, **options) -> Path:
    """A compiled-looking copy of the embedded model (cached under .cache/, reused by every test)."""
    key = "-".join([f"b{batch_size}"] + [f"{name}={value}" for name, value in sorted(options.items())])
    return write_fake_neuron_export(
        embedded_model_dir(),
        EXPORTS_DIR / key,
        batch_size=batch_size,
        width=COMPILED_WIDTH,
        height=COMPILED_HEIGHT,
        **options,
    )


def neuron_args(**overrides) -> dict:
    args = {
        "model_id": str(fake_export()),
        "model_revision": "sdk-2.26",
        "backend": "neuron",
        "image_sizes": [COMPILED_SIZE],
        "batch_size": 2,
        "neuron_cores_per_replica": 2,
        "default_steps": 3,
        "batch_wait_timeout_s": 0.05,
    }
    return {**args, **overrides}


FAKE_ENV = {"PYTHONPATH": str(FAKE_NEURON_DIR)}
# A second copy whose fake NeuronCores fail every call while this file exists (only that copy sees the variable).
WEDGED_FLAG = Path(tempfile.gettempdir()) / f"sdxl-fake-neuron-wedged-{os.getpid()}"


def wedged_app() -> dict:
    return api_application(
        neuron_args(warmup=False),
        {
            # The test calls check_health itself; Serve must not replace the replica while it looks.
            "health_check_period_s": 3600,
            "ray_actor_options": {
                "num_cpus": 1,
                "resources": {"neuron_cores": 2},
                "runtime_env": {"env_vars": {"FAKE_NEURON_FAIL_FLAG": str(WEDGED_FLAG)}},
            },
        },
        name="wedged",
        route_prefix="/wedged",
    )


# --------------------------------------------------------------------------------------------------
# In process: the adapter's checks against the compiled shapes


def _forget_fake_modules():
    for name in [m for m in sys.modules if m in ("optimum", "neuronxcc") or m.startswith("optimum.")]:
        del sys.modules[name]


@pytest.fixture
def fake_neuron(monkeypatch):
    """Inject the fake ``optimum.neuron`` (and ``neuronxcc``) into this process's ``sys.modules``."""
    _forget_fake_modules()
    monkeypatch.syspath_prepend(str(FAKE_NEURON_DIR))
    # What Ray exports for a replica holding neuron_cores=2.
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "0,1")
    import optimum.neuron

    assert optimum.neuron.IS_FAKE
    optimum.neuron.NeuronStableDiffusionXLPipeline.loads.clear()
    yield optimum.neuron
    _forget_fake_modules()


def load_neuron_backend(**overrides):
    from app.backends.neuron import NeuronBackend

    args = parse_app_args(neuron_args(**overrides))
    return NeuronBackend(args, args.model_id)


def render_one(backend, guidance_scale: float = 5.0) -> Image.Image:
    from app.batching import plan_pipeline_calls

    job = ImageJob("a cat", None, 7, 2, guidance_scale, COMPILED_WIDTH, COMPILED_HEIGHT)
    (call,) = plan_pipeline_calls([job], backend.batch_size, fixed_batch=backend.fixed_batch)
    return backend.generate(call.jobs)[0]


def test_neuron_backend_loads_the_pinned_revision_and_reads_the_compiled_shape(fake_neuron):
    backend = load_neuron_backend()
    assert fake_neuron.NeuronStableDiffusionXLPipeline.loads == [
        {"model_id": str(fake_export()), "revision": "sdk-2.26"}
    ]
    assert (backend.batch_size, backend.fixed_batch) == (2, True)
    assert backend.details["compiled_size"] == COMPILED_SIZE
    assert backend.details["compiler_version"] == SDK_2_26_COMPILER
    assert backend.pipeline.progress_bar_config == {"disable": True}
    # The image it renders has the compiled width and height, not their transpose.
    assert render_one(backend).size == (COMPILED_WIDTH, COMPILED_HEIGHT)


def test_neuron_backend_refuses_a_batch_size_other_than_the_compiled_one(fake_neuron):
    with pytest.raises(ValueError, match=r"batch_size is 4 .* compiled for batch size 2"):
        load_neuron_backend(batch_size=4)


def test_neuron_backend_refuses_an_image_size_other_than_the_compiled_one(fake_neuron):
    with pytest.raises(ValueError, match=rf"image_sizes is \['64x64'\] .* compiled for {COMPILED_SIZE}"):
        load_neuron_backend(image_sizes=["64x64"])


def test_neuron_backend_refuses_the_compiled_size_with_width_and_height_swapped(fake_neuron):
    swapped = f"{COMPILED_HEIGHT}x{COMPILED_WIDTH}"
    with pytest.raises(ValueError, match=rf"image_sizes is \['{swapped}'\] .* compiled for {COMPILED_SIZE}"):
        load_neuron_backend(image_sizes=[swapped])


def test_neuron_backend_refuses_a_model_compiled_for_several_images_per_prompt(fake_neuron):
    # One prompt must give one image, or a request's seed would not decide its image alone.
    with pytest.raises(ValueError, match=r"num_images_per_prompt=2"):
        load_neuron_backend(model_id=str(fake_export(num_images_per_prompt=2)))


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


def test_an_uncompiled_model_fails_the_load_saying_to_export_it(fake_neuron):
    # The real loader (no export=True) refuses a plain diffusers directory; replicas never compile.
    with pytest.raises(
        ValueError,
        match=r"is not compiled for Neuron .*optimum-cli export neuron .*--auto_cast matmul --auto_cast_type bf16",
    ):
        load_neuron_backend(model_id=str(embedded_model_dir()))


def test_a_model_compiled_by_a_newer_neuronx_cc_is_refused_naming_model_revision(fake_neuron):
    newer = fake_export(compiler_version="2.22.1.0+deadbeef")
    with pytest.raises(
        ValueError,
        match=r"compiled by neuronx-cc 2.22.1.0\+deadbeef, newer than this image's "
        r"2.21.33363.0\+82129205: set model_revision",
    ):
        load_neuron_backend(model_id=str(newer))
    older = load_neuron_backend(model_id=str(fake_export(compiler_version="2.20.1.0+cafe")))
    assert older.details["compiler_version"] == "2.20.1.0+cafe"


def test_a_compiled_batch_of_two_needs_guidance_above_one_and_says_so(fake_neuron):
    backend = load_neuron_backend()
    assert backend.guidance_must_exceed == 1.0
    # What the API now refuses really fails on this model: guidance off sends one latent per core.
    with pytest.raises(RuntimeError, match="neuroncore 0: input batch 1 does not match the compiled batch 2"):
        render_one(backend, guidance_scale=1.0)
    with pytest.raises(ValueError, match="default_guidance_scale is 1 .* runs only with classifier-free guidance"):
        load_neuron_backend(default_guidance_scale=1.0)


def test_a_compiled_batch_of_one_runs_without_guidance(fake_neuron):
    backend = load_neuron_backend(model_id=str(fake_export(batch_size=1)), batch_size=1)
    assert backend.guidance_must_exceed is None
    assert render_one(backend, guidance_scale=1.0).size == (COMPILED_WIDTH, COMPILED_HEIGHT)


def test_a_dynamic_batch_model_is_not_padded_and_takes_any_guidance(fake_neuron):
    backend = load_neuron_backend(model_id=str(fake_export(dynamic_batch_size=True)), batch_size=4)
    assert (backend.fixed_batch, backend.batch_size, backend.guidance_must_exceed) == (False, 4, None)
    assert render_one(backend, guidance_scale=0.0).size == (COMPILED_WIDTH, COMPILED_HEIGHT)
    assert backend.pipeline.calls[-1]["prompts"] == 1  # no padding


def edit_job(task: str, guidance_scale: float = 5.0):
    from dataclasses import replace

    image = Image.new("RGB", (COMPILED_WIDTH, COMPILED_HEIGHT), (200, 40, 40))
    mask = Image.new("L", (COMPILED_WIDTH, COMPILED_HEIGHT), 0)
    mask.paste(255, (16, 16, 64, 48))
    job = ImageJob("a cat", None, 7, 4, guidance_scale, COMPILED_WIDTH, COMPILED_HEIGHT)
    return replace(job, task=task, image=image, mask=mask if task == "inpaint" else None, strength=0.5)


def test_an_export_with_a_vae_encoder_edits_through_pipelines_sharing_the_loaded_models(fake_neuron):
    from app.batching import plan_pipeline_calls

    backend = load_neuron_backend()
    assert backend.tasks == ("generate", "img2img", "inpaint")
    for task in ("img2img", "inpaint"):
        assert backend.pipelines[task]._inner.unet is backend.pipeline._inner.unet  # from_pipe: no second copy
        (call,) = plan_pipeline_calls([edit_job(task)], backend.batch_size, fixed_batch=backend.fixed_batch)
        assert len(call.jobs) == 2  # padded to the compiled batch, as text-to-image is
        assert backend.generate(call.jobs)[0].size == (COMPILED_WIDTH, COMPILED_HEIGHT)
        assert backend.pipeline.calls[-1]["task"] == task


def test_an_export_without_a_vae_encoder_serves_text_to_image_only_and_says_why(fake_neuron):
    backend = load_neuron_backend(model_id=str(fake_export(vae_encoder=False)))
    assert backend.tasks == ("generate",)
    assert "no compiled vae_encoder" in backend.why_no_editing
    assert render_one(backend).size == (COMPILED_WIDTH, COMPILED_HEIGHT)


# --------------------------------------------------------------------------------------------------
# Over HTTP on a local Ray that advertises NeuronCores (the fake module reaches replicas via PYTHONPATH)


@pytest.fixture(scope="module")
def neuron_cluster():
    with local_serve(neuron_args(), neuron_cores=4, env=FAKE_ENV, extra_apps=[wedged_app()]) as url:
        yield url


@pytest.fixture(scope="module")
def client(neuron_cluster):
    with httpx.Client(base_url=neuron_cluster, timeout=120) as http:
        yield http


def png_pixels(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.size == (COMPILED_WIDTH, COMPILED_HEIGHT)
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
    mismatched = api_application(
        neuron_args(image_sizes=["64x64"]),
        {"max_constructor_retry_count": 1},
        name="mismatch",
        route_prefix="/mismatch",
    )
    statuses = deploy_config([api_application(neuron_args()), mismatched], timeout_s=150)
    status, message = statuses["mismatch"]
    assert status == "DEPLOY_FAILED"
    assert "image_sizes is ['64x64']" in message and f"compiled for {COMPILED_SIZE}" in message
    assert client.get("/healthz").status_code == 200


@pytest.mark.ray
def test_guidance_the_compiled_batch_cannot_run_is_a_400_and_info_says_why(client):
    refused = client.get("/imagine", params={"prompt": "a cat", "guidance_scale": 1})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["param"], error["code"]) == ("guidance_scale", "out_of_range")
    assert "greater than 1" in error["message"] and "classifier-free guidance" in error["message"]
    schema = client.get("/info").json()["request_schema"]
    assert schema["imagine"]["properties"]["guidance_scale"]["exclusiveMinimum"] == 1
    assert schema["images_generations"]["properties"]["guidance_scale"]["exclusiveMinimum"] == 1
    assert client.get("/healthz").status_code == 200  # a refused request costs the replica nothing
    assert png_pixels(client.get("/imagine", params={"prompt": "a cat", "guidance_scale": 1.5})).shape[:2] == (
        COMPILED_HEIGHT,
        COMPILED_WIDTH,
    )


@pytest.mark.ray
def test_info_shows_the_compiler_that_built_the_model(client):
    details = client.get("/info").json()["backend_details"]
    assert details["compiler_version"] == SDK_2_26_COMPILER
    assert details["installed_compiler_version"] == SDK_2_26_COMPILER


@pytest.mark.ray
def test_an_edit_on_the_fake_neuron_replica_is_padded_and_rendered_at_the_compiled_size(client):
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 120, 200)).save(buffer, format="PNG")
    response = client.post(
        "/v1/images/edits",
        data={"prompt": "a cat", "seed": "3", "steps": "3"},
        files={"image": ("in.png", buffer.getvalue(), "image/png")},
    )
    assert response.status_code == 200, response.text
    import base64

    image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    assert image.size == (COMPILED_WIDTH, COMPILED_HEIGHT)
    assert client.get("/info").json()["tasks"] == ["generate", "img2img", "inpaint"]
