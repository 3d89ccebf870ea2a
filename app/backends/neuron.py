"""neuron: optimum-neuron's ``NeuronStableDiffusionXLPipeline`` on Inferentia2 (imported only in the replica).

Facts this adapter relies on (optimum-neuron 0.4.5, ``optimum/neuron/modeling_diffusion.py`` unless named):

* Ray exports ``NEURON_RT_VISIBLE_CORES`` for the replica's ``neuron_cores`` resource; the Neuron runtime
  then sees only those cores. The SDXL UNet is loaded on visible cores 0 and 1 under
  ``torch_neuronx.DataParallel`` (``data_parallel_mode`` "unet", chosen from the compiled config; there is
  no ``device_ids`` argument), so a replica needs two cores.
* A model must be exported (compiled) beforehand: ``from_pretrained`` without ``export=True`` refuses a
  plain diffusers model ("Unable to identify neuron configuration", ``modeling_traced.py``). Batch size and
  image size are fixed at export and read from the ``"neuron"`` dict of each component's config.json:
  the text encoders' ``batch_size``, the UNet's ``static_height``/``static_width`` (latent units, times the
  VAE scale factor). The pipeline ignores ``width``/``height`` and renders the compiled size.
* Without dynamic batching (``dynamic_batch_size``, recorded at export) every call must carry exactly the
  compiled batch; the planner pads. With it, any batch runs and nothing is padded.
* Classifier-free guidance is on only when ``guidance_scale > 1``; then the UNet gets 2B latents, split
  B per core. With guidance off it gets B latents, B/2 per core: without dynamic batching that matches
  the compiled UNet batch only when it is 1 (one core then idles), so a compiled batch >= 2 needs
  ``guidance_scale > 1``. optimum-neuron does not check this; :attr:`NeuronBackend.guidance_must_exceed`
  makes the API refuse such requests with a 400 instead of a failing pipeline call.
* ``compiler_version`` (the neuronx-cc that compiled the model) is recorded at export but never checked
  when a diffusion pipeline loads; a model compiled by a newer compiler than the image's is refused here.
* Editing: ``NeuronStableDiffusionXLImg2ImgPipeline`` and ``...InpaintPipeline`` take the same export
  (the exporter compiles the VAE encoder by default; inpainting runs with the base 4-channel UNet), and
  ``from_pipe`` reuses the loaded compiled models, so they cost no NeuronCore memory. An export without
  a compiled VAE encoder loads with ``vae_encoder`` None: such a replica serves text-to-image only.
* With a local directory (and ``HF_HUB_OFFLINE=1``) loading makes no Hub calls.
* The first inference is several times slower than the next: the replica warms up before reporting healthy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from app.backends.pipeline_call import call_pipeline
from app.config import AppArgs
from app.jobs import ImageJob, Task

logger = logging.getLogger("ray.serve")

#: optimum-neuron's message for a directory without compiled configs (modeling_traced._neuron_config_init).
_NOT_COMPILED = "Unable to identify neuron configuration"


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


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a neuronx-cc version such as ``2.21.33363.0+82129205``."""
    from packaging.version import Version

    return Version(version).release


def installed_compiler_version() -> str:
    import neuronxcc

    return neuronxcc.__version__


def export_hint(args: AppArgs) -> str:
    width, height = args.default_size
    return (
        "optimum-cli export neuron --model <sdxl model> "
        f"--batch_size {args.batch_size} --height {height} --width {width} --num_images_per_prompt 1 "
        "--auto_cast matmul --auto_cast_type bf16 <dir>"
    )


class NeuronBackend:
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

        try:
            self.pipeline = NeuronStableDiffusionXLPipeline.from_pretrained(source, revision=args.model_revision)
        except ValueError as error:
            if _NOT_COMPILED not in str(error):
                raise
            raise ValueError(
                f"model_id {args.model_id!r} is not compiled for Neuron (its config.json files have no 'neuron' "
                f"section) and replicas do not compile: export it first, e.g. `{export_hint(args)}`, then set "
                "model_id to that directory (or a Hub repo holding such an export)"
            ) from None
        # optimum-neuron draws a tqdm bar on every call otherwise.
        self.pipeline.set_progress_bar_config(disable=True)
        static = self.pipeline.unet.config.neuron
        self.compiler_version = static.get("compiler_version")
        self._refuse_a_newer_compiler(args)
        batch_size, width, height = compiled_shape(self.pipeline)
        self.dynamic_batch = bool(getattr(self.pipeline, "dynamic_batch_size", False))
        if not self.dynamic_batch and args.batch_size != batch_size:
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
        data_parallel_mode = getattr(self.pipeline, "data_parallel_mode", None)
        #: ``guidance_scale`` must be greater than this (None: any value the API allows).
        self.guidance_must_exceed: float | None = None
        if not self.dynamic_batch and data_parallel_mode in ("unet", "transformer") and batch_size >= 2:
            self.guidance_must_exceed = 1.0
            if args.default_guidance_scale <= 1.0:
                raise ValueError(
                    f"default_guidance_scale is {args.default_guidance_scale:g} but {args.model_id} (compiled batch "
                    f"{batch_size}, no dynamic batching) runs only with classifier-free guidance: set "
                    "default_guidance_scale above 1, or export with --dynamic-batch-size"
                )
        self.pipelines = {"generate": self.pipeline}
        self.tasks: tuple[Task, ...] = ("generate",)
        self.why_no_editing: str | None = None
        if getattr(self.pipeline, "vae_encoder", None) is None:
            self.why_no_editing = (
                f"{args.model_id} has no compiled vae_encoder (export it with optimum-cli export neuron, which "
                "compiles it by default)"
            )
        else:
            from optimum.neuron import NeuronStableDiffusionXLImg2ImgPipeline, NeuronStableDiffusionXLInpaintPipeline

            self.pipelines["img2img"] = NeuronStableDiffusionXLImg2ImgPipeline.from_pipe(self.pipeline)
            self.pipelines["inpaint"] = NeuronStableDiffusionXLInpaintPipeline.from_pipe(self.pipeline)
            for pipeline in self.pipelines.values():
                pipeline.set_progress_bar_config(disable=True)
            self.tasks = ("generate", "img2img", "inpaint")
        # A fixed compiled batch is padded; a dynamic one takes whatever compatible images are waiting.
        self.fixed_batch = not self.dynamic_batch
        self.batch_size = batch_size if self.fixed_batch else args.batch_size
        self.details = {
            "device": "neuron",
            "visible_cores": visible,
            "compiled_batch_size": batch_size,
            "compiled_size": f"{width}x{height}",
            "dynamic_batch_size": self.dynamic_batch,
            "data_parallel_mode": data_parallel_mode,
            "compiler_version": self.compiler_version,
            "tasks": list(self.tasks),
            "installed_compiler_version": installed_compiler_version(),
        }

    def _refuse_a_newer_compiler(self, args: AppArgs) -> None:
        installed = installed_compiler_version()
        if not self.compiler_version:
            logger.warning(
                "%s records no compiler_version; cannot check it against neuronx-cc %s", args.model_id, installed
            )
            return
        if release(self.compiler_version) > release(installed):
            pinned = (
                f"model_revision {args.model_revision!r}"
                if args.model_revision
                else "the default branch (no model_revision)"
            )
            raise ValueError(
                f"{args.model_id} at {pinned} was compiled by neuronx-cc {self.compiler_version}, newer than this "
                f"image's {installed}: set model_revision to the commit exported for this image's Neuron SDK, or "
                "export the model with this image"
            )

    def generate(self, jobs: Sequence[ImageJob]) -> list:
        # Size comes from the compiled graph; the planner pads ``jobs`` to a fixed compiled batch.
        return call_pipeline(self.pipelines[jobs[0].task], jobs)
