"""The full-size random-weight SDXL builder has SDXL base 1.0's published architecture,
checked without allocating it."""

from __future__ import annotations

import pytest

from bench.full_size_sdxl import FULL, PUBLISHED_PARAMETER_COUNTS, build_components, parameter_counts
from tests.support.serve_cluster import embedded_model_dir


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(embedded_model_dir() / "tokenizer")


@pytest.fixture(scope="module")
def full_size(tokenizer):
    # The meta device holds shapes only: 3.5 B parameters cost no memory and no initialisation time.
    return build_components(FULL, device="meta", tokenizer=tokenizer)


def test_every_component_has_the_published_parameter_count(full_size):
    assert parameter_counts(full_size) == PUBLISHED_PARAMETER_COUNTS
    assert all(parameter.is_meta for module in full_size.values() for parameter in module.parameters())


def test_the_unet_conditioning_sizes_are_derived_to_the_published_2048_and_2816(full_size):
    config = full_size["unet"].config
    assert config.cross_attention_dim == FULL.cross_attention_dim == 2048
    assert config.projection_class_embeddings_input_dim == FULL.projection_class_embeddings_input_dim == 2816
    assert config.addition_embed_type == "text_time"
    assert tuple(config.block_out_channels) == (320, 640, 1280)
    assert tuple(config.transformer_layers_per_block) == (1, 2, 10)
    assert tuple(config.attention_head_dim) == (5, 10, 20)
    assert tuple(config.down_block_types) == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")


def test_the_text_encoders_are_clip_vit_l_and_openclip_bigg_with_the_real_vocabulary(full_size):
    first, second = full_size["text_encoder"].config, full_size["text_encoder_2"].config
    assert (first.hidden_size, first.num_hidden_layers, first.num_attention_heads) == (768, 12, 12)
    assert (second.hidden_size, second.num_hidden_layers, second.num_attention_heads) == (1280, 32, 20)
    assert second.projection_dim == 1280
    assert first.vocab_size == second.vocab_size == 49408


def test_the_vae_upcasts_to_fp32_unless_built_with_the_fp16_fix_config(full_size, tokenizer):
    config = full_size["vae"].config
    assert tuple(config.block_out_channels) == (128, 256, 512, 512)
    assert config.scaling_factor == 0.13025 and config.force_upcast is True
    fixed = build_components(FULL, device="meta", vae_force_upcast=False, tokenizer=tokenizer)["vae"]
    assert fixed.config.force_upcast is False
    assert parameter_counts({"vae": fixed}) == {"vae": PUBLISHED_PARAMETER_COUNTS["vae"]}


def test_the_embedded_tokenizer_only_produces_ids_inside_the_encoders_vocabulary(tokenizer):
    prompt = "an astronaut is dancing on green grass, sunlit — ünïcödé 😀 " * 10
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and max(ids) < FULL.text_encoder.vocab_size
