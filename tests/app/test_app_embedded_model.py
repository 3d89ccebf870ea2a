"""The embedded model: generated deterministically, atomically, as a standard diffusers directory."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.serve_cluster import REPO_ROOT, embedded_model_dir


def test_two_concurrent_generations_into_one_directory_both_succeed_with_identical_weights(tmp_path):
    target = tmp_path / "embedded"
    # Two replicas starting at once on a fresh node both try to generate the model.
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "app.embedded_model", str(target)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results
    assert all(stdout.strip().endswith(str(target)) for stdout, _ in results)
    # No half-written staging directories are left next to it.
    assert [path.name for path in tmp_path.iterdir()] == ["embedded"]
    # Seeded: a fresh generation equals the shared copy byte for byte.
    shared = embedded_model_dir()
    for part in (
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder_2/model.safetensors",
        "tokenizer/vocab.json",
    ):
        assert (target / part).read_bytes() == (shared / part).read_bytes(), part


def test_the_embedded_model_is_an_sdxl_pipeline_with_text_time_conditioning():
    directory = embedded_model_dir()
    index = json.loads((directory / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    unet = json.loads((directory / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time"
