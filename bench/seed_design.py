"""The seed's serving design, rebuilt from its public behaviour, as the benchmark's baseline.

What the public blueprint does (facts, not its code): a FastAPI app mounted as a Ray Serve ingress
deployment exposes ``GET /imagine?prompt=...``; it forwards the prompt over a deployment handle to a
model deployment whose ``async`` method runs the diffusers pipeline synchronously (blocking that
replica's event loop for the whole generation) and returns the PIL image; the ingress saves it as
PNG with Pillow's default settings and returns the bytes. No batching, no other parameter.

This module reproduces that shape with our own code. To compare like with like it loads the same
model as our app (``model_id`` / ``backend`` from our app's args), and passes the same steps,
guidance and size explicitly (the blueprint leaves them at the pipeline defaults, 50 steps for SDXL).
Its model deployment gets the same replicas and ``ray_actor_options`` as our ``SDXLService``.

Deployed by ``bench/compare.py`` through a Serve config (import path
``bench.seed_design:build_seed``), next to our app in the same Ray session.
"""

from __future__ import annotations

import io

from fastapi import FastAPI
from fastapi.responses import Response
from ray import serve

seed_api = FastAPI(title="seed design (benchmark baseline)")


@serve.deployment(name="SeedModel")
class SeedModel:
    def __init__(self, model_id: str, backend: str, steps: int, guidance_scale: float, width: int, height: int):
        from bench.pipelines import load_pipeline

        self._pipe = load_pipeline(model_id, backend)
        self._call = {
            "num_inference_steps": steps,
            "guidance_scale": guidance_scale,
            "width": width,
            "height": height,
        }

    async def generate(self, prompt: str):
        # Deliberately synchronous inside a coroutine, as in the seed: the replica's event loop is
        # blocked for the whole generation, so requests to this replica run strictly one at a time.
        return self._pipe(prompt, **self._call).images[0]


@serve.deployment(name="SeedIngress", num_replicas=1)
@serve.ingress(seed_api)
class SeedIngress:
    def __init__(self, model) -> None:
        self._model = model

    @seed_api.get("/imagine")
    async def imagine(self, prompt: str) -> Response:
        # The seed checks the prompt with an assert, which surfaces as a 500; kept for fidelity.
        assert len(prompt), "prompt parameter cannot be empty"
        image = await self._model.generate.remote(prompt)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")  # Pillow's default zlib level (6)
        return Response(content=buffer.getvalue(), media_type="image/png")


def build_seed(args: dict):
    """Serve app builder. ``args``: model_id, backend, steps, guidance_scale, width, height."""
    model = SeedModel.bind(
        args["model_id"],
        args["backend"],
        int(args["steps"]),
        float(args["guidance_scale"]),
        int(args["width"]),
        int(args["height"]),
    )
    return SeedIngress.bind(model)
