"""The UI application's wiring without a browser or a cluster: controls → request, builder, imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.ui import MAX_SEED, _request_from_controls, build_ui_app
from app.ui_client import ApiError
from tests.support.serve_cluster import REPO_ROOT


def _controls(**overrides):
    values = dict(
        prompt="a red fox",
        negative_prompt="",
        seed=7,
        random_seed=False,
        steps=4.0,
        guidance_scale=3.5,
        size="64x64",
        output_format="png",
    )
    values.update(overrides)
    return _request_from_controls(**values)


def test_random_seed_leaves_the_seed_to_the_service_whatever_the_seed_box_says():
    assert _controls(random_seed=True, seed=123).seed is None


def test_a_fixed_seed_is_sent_as_an_integer_and_an_empty_negative_prompt_is_omitted():
    request = _controls(seed=42.0, negative_prompt="   ")
    assert request.seed == 42 and request.negative_prompt is None
    assert request.query()["seed"] == "42" and "negative_prompt" not in request.query()


@pytest.mark.parametrize("seed", [None, -1, MAX_SEED + 1])
def test_a_missing_or_out_of_range_fixed_seed_is_explained(seed):
    with pytest.raises(ApiError, match="seed"):
        _controls(seed=seed)


def test_the_ui_application_is_one_small_replica_without_accelerators():

    deployment = build_ui_app({"api_url": "http://127.0.0.1:8000/serve"})._bound_deployment
    assert deployment.name == "SDXLWebUI"
    assert deployment.num_replicas == 1
    options = deployment.ray_actor_options
    assert options["num_cpus"] <= 0.5 and not options.get("resources") and not options.get("num_gpus")


def test_importing_the_api_and_the_ui_modules_does_not_import_gradio():
    # The API replica must not pay for (or depend on) Gradio; the UI imports it inside its replica.
    code = "import sys, app.main, app.ui, app.ui_client; print('gradio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_standalone_mode_rejects_a_bad_api_url_naming_it(capsys):
    from app.ui import main

    with pytest.raises(SystemExit) as exited:
        main(["--api-url", "localhost:8000/serve"])
    assert exited.value.code == 2
    assert "api_url" in capsys.readouterr().err


def test_the_edit_mode_sends_a_mask_transparent_where_the_visitor_painted():
    import io

    from PIL import Image

    from app.ui import _edit_inputs

    background = Image.new("RGBA", (40, 30), (10, 20, 30, 255))
    stroke = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    stroke.paste((255, 0, 0, 255), (10, 10, 20, 20))
    picture, mask = _edit_inputs({"background": background, "layers": [stroke], "composite": background})
    assert Image.open(io.BytesIO(picture)).getpixel((0, 0)) == (10, 20, 30)
    alpha = Image.open(io.BytesIO(mask)).getchannel("A")
    assert alpha.getpixel((15, 15)) == 0 and alpha.getpixel((2, 2)) == 255  # painted -> transparent -> re-drawn
    unpainted = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    assert _edit_inputs({"background": background, "layers": [unpainted]})[1] is None  # nothing painted: img2img


def test_the_edit_mode_asks_for_an_image_before_anything_is_sent():
    from app.ui import _edit_inputs
    from app.ui_client import ApiError

    with pytest.raises(ApiError, match="Upload an image to edit first"):
        _edit_inputs({"background": None, "layers": []})
