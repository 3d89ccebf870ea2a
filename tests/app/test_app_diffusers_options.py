"""Speed options of the cuda/cpu backends: validated in AppArgs, and really applied to the pipeline the backend runs."""

from __future__ import annotations

import pytest
import torch

from app.config import InvalidAppArgs, parse_app_args
from app.jobs import ImageJob
from bench.full_size_sdxl import TINY, build_pipeline, build_vae
from tests.support.serve_cluster import embedded_model_dir


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(embedded_model_dir() / "tokenizer")


def cpu_args(**overrides):
    return parse_app_args({"model_id": "tiny-random", "backend": "cpu", "image_sizes": ["64x64"], **overrides})


def one_image(backend):
    job = ImageJob(
        prompt="a lighthouse", negative_prompt=None, seed=1, steps=2, guidance_scale=5.0, width=64, height=64
    )
    (image,) = backend.generate([job])
    return image


@pytest.mark.parametrize(
    "args",
    [
        {"backend": "neuron", "diffusers_optimizations": ["fuse_qkv"]},
        {"backend": "neuron", "vae_model_id": "madebyollin/sdxl-vae-fp16-fix"},
    ],
)
def test_a_neuron_backend_refuses_diffusers_options_naming_them(args):
    with pytest.raises(
        InvalidAppArgs, match="diffusers_optimizations and vae_model_id apply to the cuda and cpu backends"
    ):
        parse_app_args(args)


@pytest.mark.parametrize(
    "value, message",
    [
        (["fuse_qkv", "fuse_qkv"], "lists an option twice"),
        (["xformers"], "diffusers_optimizations"),
    ],
)
def test_unknown_or_repeated_options_are_rejected(value, message):
    with pytest.raises(InvalidAppArgs, match=message):
        parse_app_args({"backend": "cuda", "diffusers_optimizations": value})


def test_channels_last_and_fuse_qkv_change_the_pipeline_the_backend_runs(tokenizer):
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    from app.backends.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend(
        cpu_args(diffusers_optimizations=["channels_last", "fuse_qkv"]),
        "tiny",
        pipeline=build_pipeline(TINY, tokenizer=tokenizer),
    )
    unet, vae = backend.pipeline.unet, backend.pipeline.vae
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert {type(processor) for processor in unet.attn_processors.values()} == {FusedAttnProcessor2_0}
    assert {type(processor) for processor in vae.attn_processors.values()} == {FusedAttnProcessor2_0}
    assert backend.details["optimizations"] == ["channels_last", "fuse_qkv"]
    assert one_image(backend).size == (64, 64)


def test_vae_model_id_replaces_the_models_vae_with_the_one_it_names(tokenizer, tmp_path):
    from app.backends.diffusers_backend import DiffusersBackend

    build_vae(TINY, force_upcast=False).save_pretrained(tmp_path / "vae")
    pipeline = build_pipeline(TINY, tokenizer=tokenizer)
    assert pipeline.vae.config.force_upcast is True
    backend = DiffusersBackend(cpu_args(vae_model_id=str(tmp_path / "vae")), "tiny", pipeline=pipeline)
    assert backend.pipeline.vae.config.force_upcast is False
    assert backend.details["vae"] == str(tmp_path / "vae")
    assert one_image(backend).size == (64, 64)
