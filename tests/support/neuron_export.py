"""A stand-in for ``optimum-cli export neuron`` output, read by the FAKE ``optimum.neuron`` (contract tests).

optimum-neuron's exporter writes a ``"neuron"`` dict into each component's config.json (0.4.5:
``utils/argument_utils.py`` ``store_compilation_config``): the compiled input shapes as ``static_<axis>``
(UNet height and width in latent units), ``dynamic_batch_size``, ``compiler_type`` and ``compiler_version``.
This copies the embedded diffusers model and adds those dicts, so the fake loader reads compiled shapes
from files as the real one does. The weights stay the embedded model's: it still draws noise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

#: neuronx-cc of AWS Neuron SDK 2.26.1 (the serving image's), as ``neuronxcc.__version__`` spells it.
SDK_2_26_COMPILER = "2.21.33363.0+82129205"
VAE_SCALE_FACTOR = 8


def write_fake_neuron_export(
    source: Path,
    target: Path,
    *,
    batch_size: int,
    width: int,
    height: int,
    num_images_per_prompt: int = 1,
    dynamic_batch_size: bool = False,
    compiler_version: str = SDK_2_26_COMPILER,
    vae_encoder: bool = True,
) -> Path:
    """Write a compiled-looking copy of the diffusers model at ``source`` into ``target`` (once)."""
    if (target / "model_index.json").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    common = {
        "compiler_type": "neuronx-cc",
        "compiler_version": compiler_version,
        "dynamic_batch_size": dynamic_batch_size,
        "auto_cast": "matmul",
        "auto_cast_type": "bf16",
    }
    images = batch_size * num_images_per_prompt
    shapes = {
        "text_encoder": {"static_batch_size": batch_size, "static_sequence_length": 77},
        "text_encoder_2": {"static_batch_size": batch_size, "static_sequence_length": 77},
        "unet": {
            "static_batch_size": images,
            "static_sequence_length": 77,
            "static_num_channels": 4,
            "static_height": height // VAE_SCALE_FACTOR,
            "static_width": width // VAE_SCALE_FACTOR,
            "static_vae_scale_factor": VAE_SCALE_FACTOR,
        },
        "vae": {
            "static_batch_size": images,
            "static_num_channels": 4,
            "static_height": height // VAE_SCALE_FACTOR,
            "static_width": width // VAE_SCALE_FACTOR,
        },
    }
    for component, shape in shapes.items():
        path = staging / component / "config.json"
        config = json.loads(path.read_text())
        config["neuron"] = {**common, **shape}
        path.write_text(json.dumps(config, indent=2))
    if vae_encoder:  # the exporter compiles the VAE encoder into its own folder, by default
        (staging / "vae_encoder").mkdir()
        shutil.copyfile(staging / "vae" / "config.json", staging / "vae_encoder" / "config.json")
    staging.rename(target)
    return target
