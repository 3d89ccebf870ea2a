"""cuda and cpu: diffusers' ``StableDiffusionXLPipeline`` (fp16 on a GPU, fp32 on a CPU)."""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers import StableDiffusionXLPipeline

from app.backends.pipeline_call import call_pipeline
from app.config import AppArgs
from app.jobs import ImageJob


class DiffusersBackend:
    fixed_batch = False
    guidance_must_exceed = None

    def __init__(self, args: AppArgs, source: str):
        self.device = "cuda" if args.backend == "cuda" else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("backend 'cuda' needs a GPU: set ray_actor_options.num_gpus to 1 and schedule on a GPU node")
        self.pipeline = StableDiffusionXLPipeline.from_pretrained(source, revision=args.model_revision, torch_dtype=dtype)
        self.pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.batch_size = args.batch_size
        self.details = {"device": self.device, "dtype": str(dtype).removeprefix("torch.")}

    def generate(self, jobs: Sequence[ImageJob]) -> list:
        return call_pipeline(self.pipeline, jobs, width=jobs[0].width, height=jobs[0].height)
