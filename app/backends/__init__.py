"""Backends: load a pipeline once, then turn compatible :class:`~app.jobs.ImageJob` lists into images.

One small interface for neuron, cuda and cpu. Each backend module imports torch/diffusers/optimum
only when the replica loads it, so ``app.main`` stays importable in the Serve controller (and in
the chart's tests) without the model stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from app.config import EMBEDDED_MODEL, AppArgs

if TYPE_CHECKING:
    from PIL.Image import Image

    from app.jobs import ImageJob


class ImageBackend(Protocol):
    """What the HTTP layer needs from a loaded model."""

    #: Most images one pipeline call takes.
    batch_size: int
    #: True when every call must have exactly ``batch_size`` images (a compiled Neuron graph).
    fixed_batch: bool
    #: Human-readable facts for ``/info`` (device, dtype, compiled shapes...).
    details: dict
    #: ``guidance_scale`` must be greater than this for the loaded model (None: no rule of its own).
    guidance_must_exceed: float | None
    #: What the loaded model can do ("generate", "img2img", "inpaint"), and why it cannot edit if it cannot.
    tasks: tuple[str, ...]
    why_no_editing: str | None

    def generate(self, jobs: Sequence[ImageJob]) -> list[Image]:
        """Blocking: one pipeline call for compatible jobs, one image per job, in order."""


def resolve_model_source(args: AppArgs) -> str:
    """The path or Hub id to load: ``embedded`` becomes the locally generated tiny model."""
    if args.model_id == EMBEDDED_MODEL:
        from app.embedded_model import ensure_embedded_model

        return str(ensure_embedded_model())
    return args.model_id


def load_backend(args: AppArgs) -> ImageBackend:
    """Load the configured backend (blocking; called once per replica, off the event loop)."""
    source = resolve_model_source(args)
    if args.backend == "neuron":
        from app.backends.neuron import NeuronBackend

        return NeuronBackend(args, source)
    from app.backends.diffusers_backend import DiffusersBackend

    return DiffusersBackend(args, source)
