"""Speed options of the diffusers backends (``diffusers_optimizations``, ``vae_model_id``).

Each is something diffusers offers and a GPU user expects; none is on by default. Whether one helps
depends on the GPU, the batch size and the torch version: ``bench/device_check.py`` measures each
through :class:`~app.backends.diffusers_backend.DiffusersBackend` and says which to keep.
Scaled-dot-product attention (``torch.nn.functional.scaled_dot_product_attention``) is not an
option here: diffusers uses it by default with torch 2.
"""

from __future__ import annotations

from collections.abc import Iterable


def apply_optimizations(pipeline, names: Iterable[str]) -> None:
    """Apply ``diffusers_optimizations`` to a pipeline already on its device and dtype, in a fixed order."""
    import torch

    names = set(names)
    if "fuse_qkv" in names:
        # One matmul for q, k and v in each self-attention (k and v in each cross-attention) instead
        # of three, in the UNet and the VAE (diffusers' FusedAttnProcessor2_0). First: it replaces
        # the projection weights, which the memory-format change below must see.
        pipeline.fuse_qkv_projections()
    if "channels_last" in names:
        # NHWC activations for the convolutions of the UNet and the VAE decoder.
        pipeline.unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
    if "compile_unet" in names:
        # In place, so the pipeline keeps a UNet2DConditionModel. Lazy: the first call of each
        # batch shape compiles (minutes for SDXL), which the replica's warm-up absorbs for one shape.
        pipeline.unet.compile(fullgraph=True)


def load_vae(model_id: str, dtype):
    """An ``AutoencoderKL`` to replace the model's own (e.g. madebyollin/sdxl-vae-fp16-fix).

    Its config's ``force_upcast`` decides whether an fp16 pipeline decodes in fp32: SDXL's own VAE
    says true (its activations overflow fp16); the fp16-fix VAE says false and decodes in fp16.
    """
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(model_id, torch_dtype=dtype)
