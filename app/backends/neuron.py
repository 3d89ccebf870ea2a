"""neuron: optimum-neuron's ``NeuronStableDiffusionXLPipeline`` on Inferentia2 (imported only in the replica).

Facts this adapter relies on (optimum-neuron 0.4.x, ``optimum/neuron/modeling_diffusion.py``):

* Ray exports ``NEURON_RT_VISIBLE_CORES`` for the replica's ``neuron_cores`` resource; the Neuron runtime
  then sees only those cores. ``device_ids`` is ignored since 0.3; how the cores are used
  (``data_parallel_mode``, e.g. the UNet on both cores of a pair for classifier-free guidance) comes
  from the compiled model's config.
* Batch size and image size are fixed at export. The pipeline ignores ``width``/``height`` and uses the
  compiled ``static_height``/``static_width`` (latent units, times the VAE scale factor); the prompts per
  call equal the text encoders' compiled ``batch_size``. Startup checks both against ``AppArgs`` and
  refuses to serve a mismatch with a message naming the field.
* A compiled model only runs on the Neuron SDK that compiled it: pin ``model_revision`` (the Hub repo keeps
  one revision per SDK) or compile your own with ``optimum-cli export neuron``.
* With a local directory (and ``HF_HUB_OFFLINE=1``) loading makes no Hub calls.
* The first inference is several times slower than the next: the replica warms up before reporting healthy.
"""

from __future__ import annotations

import os
from typing import Sequence

from app.api import ImageJob
from app.backends.diffusers_backend import call_pipeline
from app.config import AppArgs


def count_visible_cores(value: str) -> int:
    """Count cores in a ``NEURON_RT_VISIBLE_CORES`` value such as ``"4,5"`` or ``"4-5"``."""
    total = 0
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, high = part.split("-", 1)
            total += int(high) - int(low) + 1
        else:
            total += 1
    return total


def compiled_shape(pipeline) -> tuple[int, int, int]:
    """``(batch_size, width, height)`` the loaded Neuron pipeline was compiled for."""
    configs = pipeline.neuron_configs
    encoder = configs.get("text_encoder") or configs.get("text_encoder_2")
    batch_size = int(encoder.batch_size)
    static = pipeline.unet.config.neuron
    scale = pipeline.vae_scale_factor
    return batch_size, int(static["static_width"]) * scale, int(static["static_height"]) * scale


class NeuronBackend:
    fixed_batch = True

    def __init__(self, args: AppArgs, source: str):
        visible = os.environ.get("NEURON_RT_VISIBLE_CORES")
        if visible is None:
            # Without it the runtime would take every NeuronCore of the node, colliding with the other replicas.
            raise ValueError(
                "NEURON_RT_VISIBLE_CORES is not set, so this replica holds no NeuronCores of its own: give the "
                f"deployment ray_actor_options.resources.neuron_cores={args.neuron_cores_per_replica} "
                "(Ray then exports the variable) and run it on a Ray node that advertises neuron_cores"
            )
        if count_visible_cores(visible) != args.neuron_cores_per_replica:
            raise ValueError(
                f"neuron_cores_per_replica is {args.neuron_cores_per_replica} but this replica sees "
                f"NEURON_RT_VISIBLE_CORES={visible}: set the deployment's ray_actor_options.resources.neuron_cores "
                f"to {args.neuron_cores_per_replica}"
            )
        from optimum.neuron import NeuronStableDiffusionXLPipeline

        self.pipeline = NeuronStableDiffusionXLPipeline.from_pretrained(source, revision=args.model_revision)
        batch_size, width, height = compiled_shape(self.pipeline)
        if args.batch_size != batch_size:
            raise ValueError(
                f"batch_size is {args.batch_size} but {args.model_id} was compiled for batch size {batch_size}: "
                f"set batch_size to {batch_size} or export the model again"
            )
        if args.sizes != ((width, height),):
            raise ValueError(
                f"image_sizes is {list(args.image_sizes)} but {args.model_id} was compiled for {width}x{height}: "
                f"set image_sizes to ['{width}x{height}'] or export the model again"
            )
        if getattr(self.pipeline, "num_images_per_prompt", 1) != 1:
            # Each image must come from its own request's seed: one prompt, one image.
            raise ValueError(
                f"{args.model_id} was compiled with num_images_per_prompt={self.pipeline.num_images_per_prompt}; "
                "export it with --num_images_per_prompt 1"
            )
        self.batch_size = batch_size
        self.details = {
            "device": "neuron",
            "visible_cores": visible,
            "compiled_batch_size": batch_size,
            "compiled_size": f"{width}x{height}",
            "data_parallel_mode": getattr(self.pipeline, "data_parallel_mode", None),
        }

    def generate(self, jobs: Sequence[ImageJob]) -> list:
        # Size comes from the compiled graph; the planner pads ``jobs`` to the compiled batch.
        return call_pipeline(self.pipeline, jobs)
