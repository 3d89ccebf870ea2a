"""FAKE ``optimum.neuron`` for contract tests only: proves wiring, not Neuron hardware.

``NeuronStableDiffusionXLPipeline.from_pretrained`` loads a plain diffusers SDXL directory (the embedded
model) and behaves like a compiled Neuron pipeline in the ways the service depends on, mirroring
optimum-neuron 0.4.5's ``modeling_diffusion.py``:

* exposes ``neuron_configs[name].batch_size``, ``unet.config.neuron["static_height"/"static_width"]``
  (latent units) and ``vae_scale_factor``;
* ignores ``height``/``width`` passed to ``__call__`` and renders the compiled size;
* refuses any call whose prompt count differs from the compiled batch size (a compiled graph accepts one
  shape only).

The compiled shape is taken from ``FAKE_NEURON_BATCH_SIZE``, ``FAKE_NEURON_SIZE`` (``WxH``) and
``FAKE_NEURON_IMAGES_PER_PROMPT`` (default 1). While the file named by ``FAKE_NEURON_FAIL_FLAG`` exists,
every call fails as a wedged NeuronCore would.
Every ``__call__`` records ``NEURON_RT_VISIBLE_CORES`` in ``calls`` so a test can see what Ray exported.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

IS_FAKE = True


class NeuronStableDiffusionXLPipeline:
    loads: list[dict] = []

    def __init__(self, inner, batch_size: int, width: int, height: int):
        self._inner = inner
        self.vae_scale_factor = inner.vae_scale_factor
        encoder = SimpleNamespace(batch_size=batch_size)
        images_per_prompt = int(os.environ.get("FAKE_NEURON_IMAGES_PER_PROMPT", "1"))
        self.neuron_configs = {"text_encoder": encoder, "text_encoder_2": encoder,
                               "unet": SimpleNamespace(batch_size=images_per_prompt * batch_size)}
        # As optimum-neuron derives it: the UNet's compiled batch over the text encoder's.
        self.num_images_per_prompt = images_per_prompt
        self.unet = SimpleNamespace(config=SimpleNamespace(neuron={
            "static_height": height // self.vae_scale_factor,
            "static_width": width // self.vae_scale_factor,
        }))
        self.data_parallel_mode = "unet"
        self.calls: list[dict] = []

    @classmethod
    def from_pretrained(cls, model_id, revision=None, **kwargs):
        from diffusers import StableDiffusionXLPipeline

        if kwargs:
            raise TypeError(f"unexpected from_pretrained arguments: {sorted(kwargs)}")
        cls.loads.append({"model_id": str(model_id), "revision": revision})
        inner = StableDiffusionXLPipeline.from_pretrained(model_id)
        inner.set_progress_bar_config(disable=True)
        width, height = (int(side) for side in os.environ.get("FAKE_NEURON_SIZE", "128x128").split("x"))
        return cls(inner, int(os.environ.get("FAKE_NEURON_BATCH_SIZE", "1")), width, height)

    def __call__(self, *args, **kwargs):
        flag = os.environ.get("FAKE_NEURON_FAIL_FLAG")
        if flag and Path(flag).exists():
            raise RuntimeError("fake NeuronCore failure: the device stopped answering")
        kwargs.pop("height", None)
        kwargs.pop("width", None)
        prompts = kwargs["prompt"]
        batch = self.neuron_configs["text_encoder"].batch_size
        if len(prompts) != batch:
            raise ValueError(f"compiled for batch size {batch}, called with {len(prompts)} prompts")
        static = self.unet.config.neuron
        self.calls.append({"prompts": len(prompts), "visible_cores": os.environ.get("NEURON_RT_VISIBLE_CORES")})
        return self._inner(
            *args,
            height=static["static_height"] * self.vae_scale_factor,
            width=static["static_width"] * self.vae_scale_factor,
            **kwargs,
        )
