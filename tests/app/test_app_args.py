"""Deploy-time arguments: ``build_app`` validates them once and names the offending field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.config import InvalidAppArgs, parse_app_args
from app.main import build_app, default_deployment_options
from tests.support.serve_cluster import REPO_ROOT


@pytest.mark.parametrize(
    "args, field",
    [
        ({"backend": "tpu"}, "backend"),
        ({"batch_size": 0}, "batch_size"),
        ({"image_sizes": ["1000x1000x3"]}, "image_sizes"),
        ({"image_sizes": ["1020x1024"]}, "image_sizes"),
        ({"image_sizes": []}, "image_sizes"),
        ({"default_steps": 60, "max_steps": 50}, "default_steps"),
        ({"default_guidance_scale": float("nan")}, "default_guidance_scale"),
        ({"api_key_env": "not a name"}, "api_key_env"),
        ({"default_output_format": "gif"}, "default_output_format"),
        ({"modelid": "typo"}, "modelid"),
        ({"backend": "neuron", "image_sizes": ["1024x1024", "768x768"]}, "exactly one image size"),
    ],
)
def test_build_app_rejects_a_bad_argument_naming_the_field(args, field):
    with pytest.raises(InvalidAppArgs) as raised:
        build_app(args)
    assert field in str(raised.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(InvalidAppArgs) as raised:
        parse_app_args({"batch_size": 0, "jpeg_quality": 101})
    assert "batch_size" in str(raised.value) and "jpeg_quality" in str(raised.value)


def test_image_sizes_are_normalised_and_the_first_is_the_default():
    args = parse_app_args({"backend": "cpu", "image_sizes": [" 128x64", "64x64"]})
    assert args.image_sizes == ("128x64", "64x64")
    assert args.default_size == (128, 64)


def test_neuron_replicas_ask_for_their_neuron_cores():
    options = default_deployment_options(parse_app_args({"backend": "neuron", "neuron_cores_per_replica": 2}))
    assert options["ray_actor_options"]["resources"] == {"neuron_cores": 2}


def test_cuda_replicas_ask_for_a_gpu():
    options = default_deployment_options(parse_app_args({"backend": "cuda"}))
    assert options["ray_actor_options"]["num_gpus"] == 1


def test_build_app_binds_the_sdxl_service_deployment():
    application = build_app({"backend": "cpu", "model_id": "embedded"})
    # The chart overrides options by this exact deployment name in serveConfigV2.
    assert application._bound_deployment.name == "SDXLService"


def test_the_builder_imports_without_the_model_stack():
    # The Serve controller imports app.main to validate args; it must not need torch or diffusers.
    code = (
        "import sys, app.main, app.config, app.api, app.batching\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'optimum') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_an_unpinned_hub_model_on_neuron_is_warned_about_and_nothing_else_is():
    from app.config import deployment_warnings

    unpinned = parse_app_args({"model_id": "aws-neuron/stable-diffusion-xl-base-1-0-1024x1024"})
    (warning,) = deployment_warnings(unpinned)
    assert "model_revision is not set" in warning and "default branch" in warning
    for quiet in (
        {"model_id": "aws-neuron/stable-diffusion-xl-base-1-0-1024x1024", "model_revision": "0123abc"},
        {"model_id": "/models/sdxl"},
        {"model_id": "embedded"},
        {"model_id": "stabilityai/stable-diffusion-xl-base-1.0", "backend": "cpu"},
    ):
        assert deployment_warnings(parse_app_args(quiet)) == [], quiet
