"""What the HTTP side hands the backends: one :class:`ImageJob` per image, and a validated request.

Pure data, no imports from the rest of the app: the request parser (``app.api``) builds jobs, the
scheduler (``app.batching``, ``app.scheduling``) groups them, the backends (``app.backends``) render them.
"""

from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def batch_key(self) -> tuple:
        # A pipeline call has one step count, size and guidance scale. Jobs with and without a
        # negative prompt are kept apart too: SDXL uses zero embeddings for "no negative prompt" but
        # encodes "" for an empty one, so mixing them would change the image a seed produces.
        return (self.width, self.height, self.steps, self.guidance_scale, self.negative_prompt is not None)


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request: the images to make and how to encode them."""

    jobs: tuple[ImageJob, ...]
    output_format: str
