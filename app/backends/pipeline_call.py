"""One SDXL pipeline call for a list of compatible jobs: shared by the diffusers and Neuron backends.

Imports torch (the replica's model stack) but not diffusers: optimum-neuron's pipelines subclass
diffusers' and take the same call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from app.jobs import ImageJob


def seeded_generators(jobs: Sequence[ImageJob]) -> list[torch.Generator]:
    """One generator per image, so each request's seed alone decides its image, whatever it is batched with.

    CPU generators on every backend: diffusers draws the initial latents on the CPU and moves them,
    which makes a seed give the same starting noise on cpu and cuda.
    """
    return [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]


def edit_inputs(jobs: Sequence[ImageJob]) -> dict:
    """The pipeline arguments an edit adds: one input image (and mask) per job, and the shared strength."""
    first = jobs[0]
    if first.task == "generate":
        return {}
    inputs = {"image": [job.image for job in jobs], "strength": first.strength}
    if first.task == "inpaint":
        inputs["mask_image"] = [job.mask for job in jobs]
    return inputs


def call_pipeline(pipeline, jobs: Sequence[ImageJob], **extra) -> list:
    """Run an SDXL pipeline of the jobs' task on compatible jobs (one batch key: task, size, steps,
    guidance, strength, negative-prompt presence)."""
    first = jobs[0]
    negative = [job.negative_prompt for job in jobs] if first.negative_prompt is not None else None
    extra.update(edit_inputs(jobs))
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
