"""The embedded default model: a tiny SDXL pipeline with random weights, generated locally.

It is built from the real diffusers/transformers classes (a UNet with SDXL's ``text_time`` added
conditioning, an AutoencoderKL, CLIPTextModel + CLIPTextModelWithProjection, CLIP tokenizers and an
Euler scheduler) and written with ``save_pretrained``, so the service loads it through exactly the
``from_pretrained`` path it uses for real SDXL weights. Weights are seeded: every generation of the
directory holds the same tensors and the same seed gives the same image.

It **draws noise**, not pictures. Natively 128x128 (16x16 latents); one 20-step generation takes a
fraction of a second on a laptop CPU. To serve real pictures, set ``model_id`` to a Hub repo id or a
local ``save_pretrained`` directory of SDXL (``stabilityai/stable-diffusion-xl-base-1.0`` for
cpu/cuda, a Neuron export such as ``aws-neuron/stable-diffusion-xl-base-1-0-1024x1024`` for neuron).

Run ``python -m app.embedded_model OUTDIR`` to write it somewhere explicitly. No network is used: the
tokenizer's vocabulary is written by this module (byte-level, no merges).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

#: Bump when the architecture or weights change, so cached copies of an older layout are not reused.
EMBEDDED_MODEL_VERSION = 1

#: Where ``model_id: embedded`` is materialised unless ``SDXL_EMBEDDED_MODEL_DIR`` says otherwise.
EMBEDDED_DIR_ENV = "SDXL_EMBEDDED_MODEL_DIR"

#: The size the tiny UNet/VAE pair is built for (any multiple of 8 from 64 up works, just slower).
NATIVE_SIZE = 128

#: App args that fit this model, used by the local run (``ci/serve-local.sh``) and, verbatim, by the
#: chart's cpu-local scenario (a test keeps chart/ci/cpu-local-values.yaml equal). Not square: a
#: width/height mix-up shows. Few steps: it draws noise anyway.
EMBEDDED_LOCAL_ARGS = {
    "image_sizes": ["128x96", "96x128"],
    "default_steps": 4,
    "batch_size": 4,
    "batch_wait_timeout_s": 0.2,
}

_SEED = 20240601
_MARKER = "model_index.json"


def default_embedded_dir() -> Path:
    """Directory holding the embedded model for this user (overridable with ``SDXL_EMBEDDED_MODEL_DIR``)."""
    configured = os.environ.get(EMBEDDED_DIR_ENV)
    if configured:
        return Path(configured)
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "sdxl-inf2" / f"embedded-v{EMBEDDED_MODEL_VERSION}"


def _bytes_to_unicode() -> dict[int, str]:
    # The printable stand-ins byte-level BPE tokenizers (GPT-2, CLIP) use for every byte value.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def _write_tokenizer_files(directory: Path) -> int:
    """Write a byte-level CLIP vocabulary without merges; return its size."""
    directory.mkdir(parents=True, exist_ok=True)
    symbols = sorted(set(_bytes_to_unicode().values()))
    # CLIP marks the last symbol of a word with </w>; both forms are needed for every byte.
    tokens = ["<|startoftext|>", "<|endoftext|>"] + symbols + [symbol + "</w>" for symbol in symbols]
    vocab = {token: index for index, token in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return len(vocab)


def build_embedded_pipeline(workdir: Path):
    """Construct the tiny random-weight ``StableDiffusionXLPipeline`` (deterministic)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    vocab_dir = workdir / "vocab-source"
    vocab_size = _write_tokenizer_files(vocab_dir)
    tokenizer = CLIPTokenizer(
        vocab_file=str(vocab_dir / "vocab.json"),
        merges_file=str(vocab_dir / "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )

    text_hidden = 32
    pooled_dim = 32
    time_embed_dim = 8
    encoder_config = dict(
        vocab_size=vocab_size,
        hidden_size=text_hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="gelu",
    )
    torch.manual_seed(_SEED)
    text_encoder = CLIPTextModel(CLIPTextConfig(**encoder_config))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(projection_dim=pooled_dim, **encoder_config))
    unet = UNet2DConditionModel(
        sample_size=NATIVE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        # SDXL's conditioning: the prompt embeddings of both encoders concatenated...
        cross_attention_dim=2 * text_hidden,
        # ...plus the pooled embedding and six size/crop numbers through "text_time".
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + pooled_dim,
        transformer_layers_per_block=1,
        norm_num_groups=8,
    )
    # Four blocks give SDXL's VAE scale factor of 8, so sizes map to latents as with real weights.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=NATIVE_SIZE,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def write_embedded_model(outdir: Path) -> Path:
    """Generate the pipeline into ``outdir`` (replaced atomically if it is not already complete)."""
    outdir = Path(outdir)
    if (outdir / _MARKER).is_file():
        return outdir
    outdir.parent.mkdir(parents=True, exist_ok=True)
    # Build in a private sibling directory and rename it into place: two replicas (or a replica and
    # the local-run script) may generate at once, and a reader must never see a half-written model.
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.{uuid.uuid4().hex[:8]}.", dir=outdir.parent))
    try:
        pipeline = build_embedded_pipeline(staging)
        model_dir = staging / "model"
        pipeline.save_pretrained(model_dir, safe_serialization=True)
        try:
            os.rename(model_dir, outdir)
        except OSError:
            # Someone else finished first (the target exists and is not empty): theirs is identical.
            if not (outdir / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outdir


def ensure_embedded_model(directory: Path | None = None) -> Path:
    """Return the embedded model's directory, generating it on first use."""
    return write_embedded_model(Path(directory) if directory else default_embedded_dir())


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print(f"usage: python -m app.embedded_model [OUTDIR]  (default: {default_embedded_dir()})")
        return 2
    path = ensure_embedded_model(Path(argv[0]) if argv else None)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
