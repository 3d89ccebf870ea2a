"""SDXL base 1.0 at its published size with random weights, from the real diffusers/transformers classes.

The arithmetic of a diffusion pipeline does not depend on its weights' values, so this pipeline costs
what ``stabilityai/stable-diffusion-xl-base-1.0`` costs (latency, memory, kernels) without the Hub
or 7 GB of downloads. It draws noise. ``bench/device_check.py`` measures it through our backend;
``tests/bench/test_full_size_sdxl.py`` checks the published parameter counts on the meta device.

Sources of the numbers (each number below names its source in brackets):

- [paper] Podell et al., "SDXL: Improving Latent Diffusion Models for High-Resolution Image
  Synthesis", arXiv:2307.01952, section 2.1 and Table 1: transformer blocks [0, 2, 10] per level,
  channel multipliers [1, 2, 4], CLIP ViT-L and OpenCLIP ViT-bigG with their penultimate outputs
  concatenated (context dim 2048), the pooled bigG embedding as extra conditioning, 2.6 B UNet and
  817 M text-encoder parameters.
- [sgm] Stability AI's reference config, github.com/Stability-AI/generative-models
  configs/inference/sd_xl_base.yaml: model_channels 320, channel_mult [1, 2, 4], num_res_blocks 2,
  num_head_channels 64, transformer_depth [1, 2, 10], context_dim 2048, adm_in_channels 2816,
  three ConcatTimestepEmbedderND of outdim 256, scale_factor 0.13025, first stage ch 128,
  ch_mult [1, 2, 4, 4], num_res_blocks 2, z_channels 4.
- [unet] the model's unet/config.json, read in its verbatim copy DIFFUSERS_SDXL_UNET_CONFIG in
  github.com/kohya-ss/sd-scripts library/sdxl_model_util.py, and in Hub copies whose _name_or_path
  is the stabilityai snapshot 462165984030d82259a11f4367a4eed129e94a7b, e.g.
  https://huggingface.co/jffacevedo/flax_lcm_unet/blob/main/config.json
- [te1] text_encoder/config.json, copy with the same snapshot path:
  https://huggingface.co/AfhamAhmed1/fabric-design-sd-xl-base-1.0/blame/56429d92e4c0cafed899ba756cb3c5c887ad239e/text_encoder/config.json
- [te2] text_encoder_2/config.json, copy with the same snapshot path:
  https://huggingface.co/SPO-Diffusion-Models/SPO-SDXL_4k-p_10ep/blame/main/text_encoder_2/config.json
  (the same numbers are hard-coded for both encoders in kohya-ss/sd-scripts sdxl_model_util.py).
- [vae] Stability's own repository, vae_decoder/config.json (the diffusers VAE config the ONNX
  export was made from): https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blame/a39e4462f935b9c908770ced5d128c40ebc5d954/vae_decoder/config.json
- [vae-fix] https://huggingface.co/madebyollin/sdxl-vae-fp16-fix/blob/c2fda8dd4afc6ddcb52e874cdc7ae79087cb8616/config.json
  (same architecture, "force_upcast": false).
- [sched] https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/refs%2Fpr%2F94/scheduler/scheduler_config.json
- [counts] parameter counts of the published weights. Exact counts for the CLIP ViT-L text tower
  (123,060,480) and the VAE (83,653,863), architectures SDXL shares with SD 1.x, are tabulated at
  https://forums.fast.ai/t/stable-diffusion-parameter-budget-allocation/101515 . For the UNet,
  Stability's own file sizes, unet/diffusion_pytorch_model.safetensors 10.3 GB and its .fp16
  variant 5.14 GB (https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/tree/55dfa4c5687877ec91d098169066de000ae61691/unet),
  are 2.57 B parameters at 4 and 2 bytes each; [paper] gives 2.6 B for the UNet and 817 M for the
  two encoders together (123.06 M + 694.66 M = 817.7 M). The exact 2,567,463,684 (UNet) and
  694,659,840 (bigG) are what diffusers and transformers construct from [unet] and [te2].

Weights: every module is constructed inside ``torch.device(device)``, so parameters are created on
the target device and PyTorch's default initialisers run there (on a GPU as device kernels, not
host work). The host never holds a copy of the weights; a ``dtype`` cast happens per module on the
device. On the meta device nothing is allocated at all, which is how the tests count parameters in
seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

#: What the tests compare the builder against ([counts]).
PUBLISHED_PARAMETER_COUNTS = {
    "unet": 2_567_463_684,
    "text_encoder": 123_060_480,
    "text_encoder_2": 694_659_840,
    "vae": 83_653_863,
}


@dataclass(frozen=True)
class TextEncoderSpec:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    hidden_act: str
    projection_dim: int
    vocab_size: int = 49408  # [te1] [te2]: CLIP's BPE vocabulary
    max_position_embeddings: int = 77  # [te1] [te2]: 77-token context


@dataclass(frozen=True)
class SdxlSpec:
    """The numbers that size an SDXL base pipeline; derived numbers are properties."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    transformer_layers_per_block: tuple[int, ...]
    #: diffusers' historical name for the number of heads per level (head width = channels / this).
    attention_head_dim: tuple[int, ...]
    norm_num_groups: int
    addition_time_embed_dim: int
    text_encoder: TextEncoderSpec
    text_encoder_2: TextEncoderSpec
    vae_block_out_channels: tuple[int, ...]
    vae_layers_per_block: int
    vae_norm_num_groups: int
    vae_sample_size: int

    @property
    def cross_attention_dim(self) -> int:
        # [paper]: both encoders' penultimate hidden states, concatenated along channels.
        return self.text_encoder.hidden_size + self.text_encoder_2.hidden_size

    @property
    def projection_class_embeddings_input_dim(self) -> int:
        # [sgm] adm_in_channels: the pooled bigG embedding plus six Fourier-embedded numbers (original
        # size, crop top-left, target size; two each) of addition_time_embed_dim channels each.
        return 6 * self.addition_time_embed_dim + self.text_encoder_2.projection_dim


#: SDXL base 1.0 as published.
FULL = SdxlSpec(
    block_out_channels=(320, 640, 1280),  # [unet]; [sgm] model_channels 320 x channel_mult [1, 2, 4]
    layers_per_block=2,  # [unet]; [sgm] num_res_blocks 2
    transformer_layers_per_block=(
        1,
        2,
        10,
    ),  # [unet]; [sgm] transformer_depth; the first level has none ([paper] [0, 2, 10]: DownBlock2D)
    attention_head_dim=(5, 10, 20),  # [unet]; [sgm] num_head_channels 64: 320/64, 640/64, 1280/64
    norm_num_groups=32,  # [unet]
    addition_time_embed_dim=256,  # [unet]; [sgm] ConcatTimestepEmbedderND outdim 256
    text_encoder=TextEncoderSpec(  # CLIP ViT-L/14 text tower [te1] [paper]
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        hidden_act="quick_gelu",
        projection_dim=768,
    ),
    text_encoder_2=TextEncoderSpec(  # OpenCLIP ViT-bigG/14 text tower [te2] [paper]
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=20,
        hidden_act="gelu",
        projection_dim=1280,
    ),
    vae_block_out_channels=(128, 256, 512, 512),  # [vae]; [sgm] ch 128 x ch_mult [1, 2, 4, 4]
    vae_layers_per_block=2,  # [vae]; [sgm] num_res_blocks 2
    vae_norm_num_groups=32,  # [vae]
    vae_sample_size=1024,  # [vae]
)

#: The same family at toy width and depth: the CPU dry run of the device check (seconds, not minutes).
#: Text encoders keep the real vocabulary size so token ids are checked against the real range.
TINY = replace(
    FULL,
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    transformer_layers_per_block=(1, 1, 2),
    attention_head_dim=(1, 2, 4),
    norm_num_groups=8,
    addition_time_embed_dim=8,
    text_encoder=replace(
        FULL.text_encoder,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=32,
    ),
    text_encoder_2=replace(
        FULL.text_encoder_2,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=64,
    ),
    vae_block_out_channels=(16, 32, 32, 32),
    vae_layers_per_block=1,
    vae_norm_num_groups=8,
    vae_sample_size=128,
)

#: [vae] [sgm] scale_factor; the fp16-fix VAE keeps it [vae-fix].
VAE_SCALING_FACTOR = 0.13025


def build_unet(spec: SdxlSpec):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=spec.vae_sample_size // 8,  # [unet] 128 latents for 1024 pixels
        in_channels=4,  # [unet]; [sgm] z_channels 4
        out_channels=4,  # [unet]
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),  # [unet]
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),  # [unet]
        mid_block_type="UNetMidBlock2DCrossAttn",  # [unet]
        block_out_channels=spec.block_out_channels,
        layers_per_block=spec.layers_per_block,
        transformer_layers_per_block=spec.transformer_layers_per_block,
        attention_head_dim=spec.attention_head_dim,
        norm_num_groups=spec.norm_num_groups,
        norm_eps=1e-5,  # [unet]
        act_fn="silu",  # [unet]
        flip_sin_to_cos=True,  # [unet]
        freq_shift=0,  # [unet]
        use_linear_projection=True,  # [unet]; [sgm] use_linear_in_transformer
        upcast_attention=False,  # [unet]
        cross_attention_dim=spec.cross_attention_dim,  # 2048: [unet]; [sgm] context_dim
        addition_embed_type="text_time",  # [unet]
        addition_time_embed_dim=spec.addition_time_embed_dim,
        projection_class_embeddings_input_dim=spec.projection_class_embeddings_input_dim,  # 2816: [unet]
    )


def text_encoder_config(encoder: TextEncoderSpec, tokenizer):
    from transformers import CLIPTextConfig

    # Special-token ids are the tokenizer's (the embedded model's byte-level vocabulary, ids < 600);
    # they pick the pooled position, not the architecture.
    return CLIPTextConfig(
        vocab_size=encoder.vocab_size,
        hidden_size=encoder.hidden_size,
        intermediate_size=encoder.intermediate_size,
        num_hidden_layers=encoder.num_hidden_layers,
        num_attention_heads=encoder.num_attention_heads,
        max_position_embeddings=encoder.max_position_embeddings,
        hidden_act=encoder.hidden_act,
        projection_dim=encoder.projection_dim,
        layer_norm_eps=1e-5,  # [te1] [te2]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_vae(spec: SdxlSpec, *, force_upcast: bool = True):
    """SDXL's VAE. ``force_upcast`` is SDXL's published true ([vae]); false is the fp16-fix config.

    SDXL's own VAE weights overflow fp16 inside the decoder, so its config asks pipelines to decode
    in fp32 (``force_upcast: true``: the fp16 pipeline casts the VAE up and back on every call).
    madebyollin/sdxl-vae-fp16-fix is the same architecture fine-tuned so activations stay in fp16's
    range, and only its config says ``force_upcast: false`` [vae-fix]. The flag is a promise about
    the weights: set it false only for weights that keep it (random weights here are only timed).
    """
    from diffusers import AutoencoderKL

    levels = len(spec.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=3,  # [vae]
        out_channels=3,  # [vae]
        down_block_types=("DownEncoderBlock2D",) * levels,  # [vae]
        up_block_types=("UpDecoderBlock2D",) * levels,  # [vae]
        block_out_channels=spec.vae_block_out_channels,
        layers_per_block=spec.vae_layers_per_block,
        act_fn="silu",  # [vae]
        latent_channels=4,  # [vae]; [sgm] z_channels 4
        norm_num_groups=spec.vae_norm_num_groups,
        sample_size=spec.vae_sample_size,
        scaling_factor=VAE_SCALING_FACTOR,
        force_upcast=force_upcast,
    )


def build_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(  # every value: [sched]
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="epsilon",
        interpolation_type="linear",
        steps_offset=1,
        timestep_spacing="leading",
        use_karras_sigmas=False,
    )


def embedded_tokenizer():
    """The embedded model's CLIP tokenizer (byte-level vocabulary written locally; no Hub)."""
    from transformers import CLIPTokenizer

    from app.embedded_model import ensure_embedded_model

    return CLIPTokenizer.from_pretrained(Path(ensure_embedded_model()) / "tokenizer")


def build_components(
    spec: SdxlSpec, *, device="cpu", dtype=None, vae_force_upcast: bool = True, tokenizer=None
) -> dict:
    """UNet, both text encoders and the VAE, created on ``device`` (``"meta"``: shapes only)."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tokenizer if tokenizer is not None else embedded_tokenizer()
    with torch.device(device):
        components = {
            "unet": build_unet(spec),
            "text_encoder": CLIPTextModel(text_encoder_config(spec.text_encoder, tokenizer)),
            "text_encoder_2": CLIPTextModelWithProjection(text_encoder_config(spec.text_encoder_2, tokenizer)),
            "vae": build_vae(spec, force_upcast=vae_force_upcast),
        }
    for module in components.values():
        module.eval().requires_grad_(False)
        if dtype is not None:
            module.to(dtype)
    return components


def build_pipeline(
    spec: SdxlSpec = FULL, *, device="cpu", dtype=None, seed: int = 0, vae_force_upcast: bool = True, tokenizer=None
):
    """A ``StableDiffusionXLPipeline`` of ``spec``'s size with seeded random weights on ``device``."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    tokenizer = tokenizer if tokenizer is not None else embedded_tokenizer()
    torch.manual_seed(seed)
    components = build_components(
        spec, device=device, dtype=dtype, vae_force_upcast=vae_force_upcast, tokenizer=tokenizer
    )
    return StableDiffusionXLPipeline(
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=build_scheduler(),
        # The invisible-watermark package is not a dependency; SDXL's model_index leaves it to the
        # environment, and its cost (a DWT on the output image) is not the model's.
        add_watermarker=False,
        **components,
    )


def parameter_counts(components: dict) -> dict[str, int]:
    return {name: sum(parameter.numel() for parameter in module.parameters()) for name, module in components.items()}
