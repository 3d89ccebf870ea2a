"""Loading the pipeline for the baseline and for the bare in-process measurements.

The baseline loads the way the seed does (``from_pretrained`` on the model id), pointed at the same
model as our app: ``embedded`` resolves to the directory our app generates (app.embedded_model), so
both designs run identical weights. The progress bar is switched off here although the seed leaves
it on: it favours the baseline slightly, which keeps the comparison conservative.
"""

from __future__ import annotations


def resolve_model_path(model_id: str) -> str:
    if model_id == "embedded":
        from app.embedded_model import ensure_embedded_model

        return str(ensure_embedded_model())
    return model_id


def load_pipeline(model_id: str, backend: str = "cpu"):
    import torch
    from diffusers import StableDiffusionXLPipeline

    if backend not in ("cpu", "cuda"):
        raise ValueError(f"the baseline runs diffusers pipelines only (cpu/cuda), not {backend!r}")
    dtype = torch.float16 if backend == "cuda" else torch.float32
    pipe = StableDiffusionXLPipeline.from_pretrained(resolve_model_path(model_id), torch_dtype=dtype)
    pipe = pipe.to(backend)
    pipe.set_progress_bar_config(disable=True)
    return pipe
