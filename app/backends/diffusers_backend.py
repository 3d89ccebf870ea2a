"""cuda and cpu: diffusers' SDXL pipelines (fp16 on a GPU, fp32 on a CPU).

Text-to-image loads ``StableDiffusionXLPipeline``; the img2img and inpainting pipelines are built from its
already loaded modules with ``from_pipe`` (no second copy of any weight), so one replica serves all three.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline

from app.backends.diffusers_options import apply_optimizations, load_vae
from app.backends.pipeline_call import call_pipeline
from app.config import AppArgs
from app.jobs import TASKS, ImageJob


class DiffusersBackend:
    fixed_batch = False
    guidance_must_exceed = None
    tasks = TASKS
    why_no_editing = None

    def __init__(self, args: AppArgs, source: str, pipeline: StableDiffusionXLPipeline | None = None):
        """Load ``source``, or take an already built ``pipeline`` (benchmarks build random-weight ones)."""
        self.device = "cuda" if args.backend == "cuda" else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "backend 'cuda' needs a GPU: set ray_actor_options.num_gpus to 1 and schedule on a GPU node"
            )
        if pipeline is None:
            pipeline = StableDiffusionXLPipeline.from_pretrained(
                source, revision=args.model_revision, torch_dtype=dtype
            )
        if args.vae_model_id:
            pipeline.vae = load_vae(args.vae_model_id, dtype)
        self.pipeline = pipeline.to(self.device, dtype)
        apply_optimizations(self.pipeline, args.diffusers_optimizations)
        self.pipeline.set_progress_bar_config(disable=True)
        self.pipelines = {
            "generate": self.pipeline,
            "img2img": StableDiffusionXLImg2ImgPipeline.from_pipe(self.pipeline),
            "inpaint": StableDiffusionXLInpaintPipeline.from_pipe(self.pipeline),
        }
        for pipeline in self.pipelines.values():
            pipeline.set_progress_bar_config(disable=True)
        self.batch_size = args.batch_size
        self.details = {
            "device": self.device,
            "dtype": str(dtype).removeprefix("torch."),
            "optimizations": list(args.diffusers_optimizations),
            "vae": args.vae_model_id or "the model's own",
        }

    def generate(self, jobs: Sequence[ImageJob]) -> list:
        first = jobs[0]
        # img2img takes its size from the input image; the others are told the size.
        size = {} if first.task == "img2img" else {"width": first.width, "height": first.height}
        return call_pipeline(self.pipelines[first.task], jobs, **size)
