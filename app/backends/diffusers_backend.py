"""cuda and cpu: diffusers' ``StableDiffusionXLPipeline`` (fp16 on a GPU, fp32 on a CPU)."""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers import StableDiffusionXLPipeline

from app.api import ImageJob
from app.backends.diffusers_options import apply_optimizations, load_vae
from app.config import AppArgs


def seeded_generators(jobs: Sequence[ImageJob]) -> list[torch.Generator]:
    """One generator per image, so each request's seed alone decides its image, whatever it is batched with.

    CPU generators on every backend: diffusers draws the initial latents on the CPU and moves them,
    which makes a seed give the same starting noise on cpu and cuda.
    """
    return [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]


def call_pipeline(pipeline, jobs: Sequence[ImageJob], **extra) -> list:
    """Run an SDXL pipeline on compatible jobs (same size, steps, guidance, negative-prompt presence)."""
    first = jobs[0]
    negative = [job.negative_prompt for job in jobs] if first.negative_prompt is not None else None
    with torch.inference_mode():
        result = pipeline(
            prompt=[job.prompt for job in jobs],
            negative_prompt=negative,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            generator=seeded_generators(jobs),
            output_type="pil",
            **extra,
        )
    return list(result.images)


class DiffusersBackend:
    fixed_batch = False

    def __init__(self, args: AppArgs, source: str, pipeline: StableDiffusionXLPipeline | None = None):
        """Load ``source``, or take an already built ``pipeline`` (benchmarks build random-weight ones)."""
        self.device = "cuda" if args.backend == "cuda" else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("backend 'cuda' needs a GPU: set ray_actor_options.num_gpus to 1 and schedule on a GPU node")
        if pipeline is None:
            pipeline = StableDiffusionXLPipeline.from_pretrained(source, revision=args.model_revision, torch_dtype=dtype)
        if args.vae_model_id:
            pipeline.vae = load_vae(args.vae_model_id, dtype)
        self.pipeline = pipeline.to(self.device, dtype)
        apply_optimizations(self.pipeline, args.diffusers_optimizations)
        self.pipeline.set_progress_bar_config(disable=True)
        self.batch_size = args.batch_size
        self.details = {
            "device": self.device,
            "dtype": str(dtype).removeprefix("torch."),
            "optimizations": list(args.diffusers_optimizations),
            "vae": args.vae_model_id or "the model's own",
        }

    def generate(self, jobs: Sequence[ImageJob]) -> list:
        return call_pipeline(self.pipeline, jobs, width=jobs[0].width, height=jobs[0].height)
