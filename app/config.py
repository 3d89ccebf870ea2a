"""The application's public contract: the arguments a RayService passes in serveConfigV2 ``args``.

Everything a deployer may set is declared here once, typed and bounded. The Helm chart builds these
arguments from ``values.yaml``; ``build_app`` validates them in the Serve controller, so a bad value
fails the deploy with a message that names the field instead of crash-looping replicas.

This module must stay importable without torch, diffusers or the Neuron stack.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: The model the chart deploys by default: SDXL base precompiled by AWS for 1024x1024, batch 1.
DEFAULT_NEURON_MODEL = "aws-neuron/stable-diffusion-xl-base-1-0-1024x1024"

#: ``model_id`` value that selects the tiny random-weight pipeline generated on first use.
EMBEDDED_MODEL = "embedded"

Backend = Literal["neuron", "cuda", "cpu"]
#: Speed options of the cuda/cpu backends (app/backends/diffusers_options.py), measured by bench/device_check.py.
DiffusersOptimization = Literal["channels_last", "fuse_qkv", "compile_unet"]
OutputFormat = Literal["png", "jpeg", "webp"]

_SIZE_PATTERN = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")
# SDXL's VAE downsamples by 8 and the UNet by a further 4 (three down blocks), hence multiples of 8
# at minimum; Neuron exports and diffusers both reject other sizes.
_SIZE_MULTIPLE = 8
_MAX_SIDE = 2048


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WIDTHxHEIGHT"`` into ``(width, height)``; raise ``ValueError`` with the rule broken."""
    match = _SIZE_PATTERN.match(text.strip())
    if not match:
        raise ValueError(f"size {text!r} must look like '1024x1024' (WIDTHxHEIGHT in pixels)")
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        if side % _SIZE_MULTIPLE or not 64 <= side <= _MAX_SIDE:
            raise ValueError(
                f"size {text!r}: each side must be a multiple of {_SIZE_MULTIPLE} between 64 and {_MAX_SIDE}"
            )
    return width, height


class AppArgs(BaseModel):
    """Arguments of the SDXL Serve application (serveConfigV2 ``applications[].args``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(
        default=DEFAULT_NEURON_MODEL,
        min_length=1,
        max_length=512,
        description=(
            "Hugging Face Hub repo id, a local directory saved with save_pretrained, or 'embedded' for "
            "the tiny random-weight pipeline (draws noise; for wiring tests and local runs)."
        ),
    )
    model_revision: str | None = Field(
        default=None,
        max_length=128,
        description=(
            "Hub revision (branch, tag or commit). Neuron models are tied to the Neuron SDK that "
            "compiled them: pin the revision built for the image's SDK."
        ),
    )
    backend: Backend = Field(
        default="neuron",
        description="neuron: optimum-neuron on Inferentia2; cuda: diffusers fp16 on a GPU; cpu: diffusers fp32.",
    )
    image_sizes: tuple[str, ...] = Field(
        default=("1024x1024",),
        min_length=1,
        max_length=16,
        description=(
            "Sizes ('WIDTHxHEIGHT') the model can generate; the first is the default. A Neuron model "
            "supports exactly the size it was compiled for."
        ),
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        le=16,
        description=(
            "Images per pipeline call. For Neuron this must equal the compiled batch size (requests are "
            "padded or split to it); for cuda/cpu it is the most requests batched together."
        ),
    )
    batch_wait_timeout_s: float = Field(
        default=0.05,
        ge=0.0,
        le=2.0,
        description=(
            "Longest a batch waits for compatible requests. It waits only while the pipeline is busy "
            "anyway: a request that finds the replica idle starts at once."
        ),
    )
    neuron_cores_per_replica: int = Field(
        default=2,
        ge=1,
        le=32,
        description=(
            "NeuronCores each replica owns (Ray exports NEURON_RT_VISIBLE_CORES to the replica). Must "
            "match the model's compiled parallelism: 2 for the default UNet data-parallel SDXL export."
        ),
    )
    default_steps: int = Field(default=30, ge=1, le=500, description="Denoising steps when a request gives none.")
    max_steps: int = Field(default=50, ge=1, le=500, description="Most denoising steps a request may ask for.")
    default_guidance_scale: float = Field(
        default=5.0, ge=0.0, le=30.0, allow_inf_nan=False, description="Classifier-free guidance when a request gives none."
    )
    max_guidance_scale: float = Field(
        default=20.0, ge=0.0, le=30.0, allow_inf_nan=False, description="Largest guidance scale a request may ask for."
    )
    max_prompt_chars: int = Field(
        default=2000, ge=1, le=20000, description="Longest prompt or negative prompt, in characters."
    )
    max_images_per_request: int = Field(
        default=4, ge=1, le=16, description="Largest 'n' a /v1/images/generations request may ask for."
    )
    max_body_bytes: int = Field(
        default=65536, ge=1024, le=10 * 1024 * 1024, description="Largest request body; larger bodies get 413."
    )
    default_output_format: OutputFormat = Field(default="png", description="Image format when a request gives none.")
    png_compress_level: int = Field(
        default=1,
        ge=0,
        le=9,
        description="zlib level for PNG. 1 is several times faster than Pillow's default 6 for a few % more bytes.",
    )
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality.")
    webp_quality: int = Field(default=90, ge=1, le=100, description="WebP quality.")
    warmup: bool = Field(
        default=True,
        description="Run one generation in the replica's constructor; the first Neuron call is several times slower.",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "Name of an environment variable holding an API key. When set, generation routes need "
            "'Authorization: Bearer <key>'; health routes stay open. A replica whose variable is empty refuses to start."
        ),
    )

    diffusers_optimizations: tuple[DiffusersOptimization, ...] = Field(
        default=(),
        max_length=3,
        description=(
            "cuda/cpu only. 'channels_last': NHWC convolutions in the UNet and VAE; 'fuse_qkv': one "
            "matmul for q, k and v per attention (diffusers' fuse_qkv_projections); 'compile_unet': "
            "torch.compile of the UNet (each new batch shape compiles first, minutes for SDXL). "
            "Off by default; bench/device_check.py measures which help on a GPU."
        ),
    )
    vae_model_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description=(
            "cuda/cpu only: an AutoencoderKL (Hub id or local directory) used instead of the model's "
            "VAE. SDXL's own VAE decodes in fp32 on cuda (its config says force_upcast: its "
            "activations overflow fp16); madebyollin/sdxl-vae-fp16-fix decodes in fp16."
        ),
    )

    @field_validator("diffusers_optimizations")
    @classmethod
    def _optimizations_are_unique(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(names)) != len(names):
            raise ValueError("diffusers_optimizations lists an option twice")
        return names

    @field_validator("image_sizes")
    @classmethod
    def _sizes_parse_and_are_unique(cls, sizes: tuple[str, ...]) -> tuple[str, ...]:
        normalised = tuple("{}x{}".format(*parse_size(size)) for size in sizes)
        if len(set(normalised)) != len(normalised):
            raise ValueError("image_sizes lists a size twice")
        return normalised

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> AppArgs:
        if self.default_steps > self.max_steps:
            raise ValueError(f"default_steps ({self.default_steps}) must not exceed max_steps ({self.max_steps})")
        if self.default_guidance_scale > self.max_guidance_scale:
            raise ValueError(
                f"default_guidance_scale ({self.default_guidance_scale}) must not exceed "
                f"max_guidance_scale ({self.max_guidance_scale})"
            )
        if self.backend == "neuron" and (self.diffusers_optimizations or self.vae_model_id):
            raise ValueError(
                "diffusers_optimizations and vae_model_id apply to the cuda and cpu backends; "
                "a Neuron model is compiled with its own VAE and graphs"
            )
        if self.backend == "neuron" and len(self.image_sizes) != 1:
            raise ValueError("backend 'neuron' supports exactly one image size: the one the model was compiled for")
        return self

    @property
    def sizes(self) -> tuple[tuple[int, int], ...]:
        """``image_sizes`` as ``(width, height)`` pairs, default first."""
        return tuple(parse_size(size) for size in self.image_sizes)

    @property
    def default_size(self) -> tuple[int, int]:
        return self.sizes[0]


class InvalidAppArgs(ValueError):
    """Raised by :func:`parse_app_args`; the message names every offending field."""


def parse_app_args(raw: dict | None) -> AppArgs:
    """Validate serveConfigV2 ``args`` once, turning pydantic's report into one readable message."""
    try:
        return AppArgs.model_validate(raw or {})
    except ValidationError as error:
        raise InvalidAppArgs("invalid SDXL application args: " + describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every offending field and its rule (shared by the API and UI builders)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'args'}: {item['msg']}" for item in error.errors()
    )
