"""What the HTTP side hands the backends: one :class:`ImageJob` per image, and a validated request.

Pure data, no imports from the rest of the app: the request parser (``app.api``) builds jobs, the
scheduler (``app.batching``, ``app.scheduling``) groups them, the backends (``app.backends``) render them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: What a job asks of the model: draw from text, re-draw a whole image, or re-draw a masked region.
Task = Literal["generate", "img2img", "inpaint"]
TASKS: tuple[Task, ...] = ("generate", "img2img", "inpaint")


@dataclass(frozen=True)
class ImageJob:
    """One image to generate. Jobs with equal :attr:`batch_key` can share a pipeline call."""

    prompt: str
    negative_prompt: str | None
    seed: int
    steps: int
    guidance_scale: float
    width: int
    height: int
    task: Task = "generate"
    #: The input image of an edit (PIL, RGB, already at width x height); None for "generate".
    image: Any = field(default=None, compare=False, repr=False)
    #: For "inpaint": where to re-draw (PIL "L", 255 = re-draw), at width x height.
    mask: Any = field(default=None, compare=False, repr=False)
    #: For edits: the share of the steps run on the input image (1 = ignore it).
    strength: float | None = None

    @property
    def batch_key(self) -> tuple:
        # A pipeline call has one task, step count, size, guidance scale and strength. Jobs with and
        # without a negative prompt are kept apart too: SDXL uses zero embeddings for "no negative
        # prompt" but encodes "" for an empty one, so mixing them would change the image a seed produces.
        return (
            self.task,
            self.width,
            self.height,
            self.steps,
            self.guidance_scale,
            self.strength,
            self.negative_prompt is not None,
        )


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request: the images to make and how to encode them."""

    jobs: tuple[ImageJob, ...]
    output_format: str
