"""FAKE ``optimum.neuron`` for contract tests only: proves wiring, not Neuron hardware.

``NeuronStableDiffusionXLPipeline.from_pretrained`` loads a directory written by
``tests.support.neuron_export.write_fake_neuron_export`` (the embedded diffusers model plus the ``"neuron"``
dict optimum-neuron's exporter writes into each component's config.json) and behaves like optimum-neuron
0.4.5's ``modeling_diffusion.py`` where the service depends on it:

* a directory without a ``"neuron"`` config is refused with the real loader's ValueError
  (``modeling_traced.py`` ``_neuron_config_init``);
* ``neuron_configs[name].batch_size`` / ``.dynamic_batch_size``, ``unet.config.neuron`` (``static_*`` in latent
  units, ``compiler_version``), ``vae_scale_factor``, ``dynamic_batch_size`` (all components),
  ``num_images_per_prompt`` (UNet batch over text-encoder batch) and ``data_parallel_mode`` (``"unet"``);
* ``height``/``width`` passed to ``__call__`` are ignored: the compiled size is rendered;
* without dynamic batching a call must carry exactly the compiled batch of prompts;
* the UNet runs under ``torch_neuronx.DataParallel`` over two cores (mode ``"unet"``): its batch is
  ``B`` latents, or ``2B`` with classifier-free guidance (``guidance_scale > 1``), split along dim 0
  between the cores; without dynamic batching every core's share must equal the compiled UNet batch,
  so ``guidance_scale <= 1`` on a compiled batch >= 2 fails as it does on Inferentia2.

* ``NeuronStableDiffusionXLImg2ImgPipeline`` / ``...InpaintPipeline`` are made with ``from_pipe`` from the
  loaded text-to-image pipeline (sharing its models, as optimum-neuron's does) and resize the input image
  to the compiled size; ``vae_encoder`` is None when the export has no compiled VAE encoder (the real
  loader leaves it None when ``vae_encoder/`` has no model).

While the file named by ``FAKE_NEURON_FAIL_FLAG`` exists, every call fails as a wedged NeuronCore would.
Every ``__call__`` records the prompt count and ``NEURON_RT_VISIBLE_CORES`` in ``calls``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

IS_FAKE = True

#: The components whose config.json carries the compiled "neuron" dict (text encoders first, as the real
#: loader reads them).
COMPILED_COMPONENTS = ("text_encoder", "text_encoder_2", "unet", "vae")
NOT_COMPILED = (
    "Unable to identify neuron configuration with the keyword `neuron`, make sure that your config file "
    "contains necessary information"
)


def _neuron_config(model_dir: Path, component: str) -> dict:
    config = json.loads((model_dir / component / "config.json").read_text())
    if "neuron" not in config:
        raise ValueError(NOT_COMPILED)
    return config["neuron"]


def _data_parallel_shares(batch: int, cores: int = 2) -> list[int]:
    # torch_neuronx.DataParallel splits dim 0 into near-equal chunks, one per core that gets any.
    size, remainder = divmod(batch, cores)
    return [size + (1 if index < remainder else 0) for index in range(cores) if size or index < remainder]


class NeuronStableDiffusionXLPipeline:
    loads: list[dict] = []

    def __init__(self, inner, neuron: dict[str, dict], vae_encoder=None):
        self._inner = inner
        self.vae_encoder = vae_encoder
        self.vae_scale_factor = inner.vae_scale_factor
        self.neuron_configs = {
            name: SimpleNamespace(
                batch_size=config["static_batch_size"], dynamic_batch_size=config["dynamic_batch_size"]
            )
            for name, config in neuron.items()
        }
        self.dynamic_batch_size = all(config["dynamic_batch_size"] for config in neuron.values())
        self.num_images_per_prompt = neuron["unet"]["static_batch_size"] // neuron["text_encoder"]["static_batch_size"]
        self.unet = SimpleNamespace(config=SimpleNamespace(neuron=dict(neuron["unet"])))
        self.data_parallel_mode = "unet"
        self.progress_bar_config: dict = {}
        self.calls: list[dict] = []

    @classmethod
    def from_pretrained(cls, model_id, revision=None, **kwargs):
        from diffusers import StableDiffusionXLPipeline

        if kwargs:
            raise TypeError(f"unexpected from_pretrained arguments: {sorted(kwargs)}")
        model_dir = Path(model_id)
        neuron = {name: _neuron_config(model_dir, name) for name in COMPILED_COMPONENTS}
        cls.loads.append({"model_id": str(model_id), "revision": revision})
        inner = StableDiffusionXLPipeline.from_pretrained(model_dir)
        inner.set_progress_bar_config(disable=True)
        has_encoder = (model_dir / "vae_encoder" / "config.json").is_file()
        return cls(inner, neuron, vae_encoder=inner.vae if has_encoder else None)

    @classmethod
    def from_pipe(cls, pipe: NeuronStableDiffusionXLPipeline):
        """A pipeline of this class sharing ``pipe``'s (compiled) models."""
        import diffusers

        inner = getattr(diffusers, cls._DIFFUSERS_CLASS).from_pipe(pipe._inner)
        made = cls.__new__(cls)
        made.__dict__.update(pipe.__dict__)
        made._inner = inner
        made.calls = pipe.calls
        return made

    def set_progress_bar_config(self, **kwargs):
        self.progress_bar_config = kwargs

    def __call__(self, *args, guidance_scale: float = 5.0, **kwargs):
        if "image" in kwargs and self.vae_encoder is None:
            raise AttributeError("'NoneType' object is not callable")  # what vae.encode() meets without an encoder
        flag = os.environ.get("FAKE_NEURON_FAIL_FLAG")
        if flag and Path(flag).exists():
            raise RuntimeError("fake NeuronCore failure: the device stopped answering")
        kwargs.pop("height", None)
        kwargs.pop("width", None)
        prompts = kwargs["prompt"]
        batch = self.neuron_configs["text_encoder"].batch_size
        if not self.dynamic_batch_size:
            if len(prompts) != batch:
                raise ValueError(f"compiled for batch size {batch}, called with {len(prompts)} prompts")
            unet_batch = self.neuron_configs["unet"].batch_size
            guided = guidance_scale > 1
            latents = len(prompts) * self.num_images_per_prompt * (2 if guided else 1)
            for core, share in enumerate(_data_parallel_shares(latents)):
                if share != unet_batch:
                    raise RuntimeError(
                        f"fake torch_neuronx.DataParallel on neuroncore {core}: input batch {share} does not match "
                        f"the compiled batch {unet_batch}"
                    )
        static = self.unet.config.neuron
        height, width = static["static_height"] * self.vae_scale_factor, static["static_width"] * self.vae_scale_factor
        self.calls.append(
            {"prompts": len(prompts), "visible_cores": os.environ.get("NEURON_RT_VISIBLE_CORES"), "task": self._TASK}
        )
        if "image" in kwargs:  # optimum-neuron resizes edit inputs to the compiled size
            kwargs["image"] = [image.resize((width, height)) for image in kwargs["image"]]
        if "mask_image" in kwargs:
            kwargs["mask_image"] = [mask.resize((width, height)) for mask in kwargs["mask_image"]]
        size = {} if self._TASK == "img2img" else {"height": height, "width": width}
        return self._inner(*args, guidance_scale=guidance_scale, **size, **kwargs)

    _TASK = "generate"
    _DIFFUSERS_CLASS = "StableDiffusionXLPipeline"


class NeuronStableDiffusionXLImg2ImgPipeline(NeuronStableDiffusionXLPipeline):
    _TASK = "img2img"
    _DIFFUSERS_CLASS = "StableDiffusionXLImg2ImgPipeline"


class NeuronStableDiffusionXLInpaintPipeline(NeuronStableDiffusionXLPipeline):
    _TASK = "inpaint"
    _DIFFUSERS_CLASS = "StableDiffusionXLInpaintPipeline"
