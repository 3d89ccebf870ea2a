"""The web UI: a Gradio page that calls the service's own HTTP API.

Deployed by the chart (``ui.enabled``) and by ``ci/serve-local.sh --ui`` as a second Serve application,
``app.ui:build_ui_app``, next to the API under its own route prefix (``/ui``). It owns no model and
no GPU/Neuron resources: every image comes from ``GET {api_url}/imagine``, so the UI sees exactly
what an API user sees, errors included. Standalone: ``python -m app.ui --api-url http://host/serve``.

Gradio is imported inside the replica (``__serve_build_asgi_app__``), so importing this module, or
``app.main``, never needs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.api import MAX_SEED
from app.ui_client import (
    ApiError,
    EditRequest,
    GenerationRequest,
    GenerationResult,
    InvalidUIArgs,
    ServiceInfo,
    UIArgs,
    api_key_from_env,
    edit,
    fetch_info,
    generate,
    parse_ui_args,
)

if TYPE_CHECKING:
    import gradio as gr

__all__ = ["build_ui_app", "build_blocks", "build_asgi_app", "InvalidUIArgs", "UIArgs", "parse_ui_args"]

#: Step of the guidance slider; its lowest value is one step above a model's exclusive minimum.
_GUIDANCE_STEP = 0.1
# Generated files are handed to Gradio by path; older ones are pruned so a long-running UI replica
# does not fill its disk. Gradio's own cache copy is cleaned by ``delete_cache`` below.
_KEEP_FILES_S = 3600
# Gradio's upload route takes the image to edit; capped so that nobody fills the replica's /tmp (on a
# worker, the emptyDir the SDXL replicas share). The API's own max_upload_bytes (8 MiB by default) then
# decides, and its 413 is shown in words.
_MAX_UPLOAD = "10mb"

_CSS = """
#status .ui-error { border: 1px solid #dc2626; background: #fef2f2; color: #7f1d1d; padding: 0.6em 0.8em;
  border-radius: 6px; white-space: pre-wrap; }
#status .ui-ok { color: #166534; padding: 0.2em 0; }
"""


def _error_html(message: str) -> str:
    return f'<div class="ui-error" role="alert"><strong>Error:</strong> {html.escape(message)}</div>'


def _ok_html(message: str) -> str:
    return f'<div class="ui-ok">{html.escape(message)}</div>'


class _ImageStore:
    """Writes the service's bytes to disk unchanged (format, metadata) for Gradio to serve."""

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory or tempfile.mkdtemp(prefix="sdxl-ui-"))
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, result: GenerationResult) -> str:
        now = time.time()
        for old in self.directory.glob("sdxl-*"):
            try:
                if now - old.stat().st_mtime > _KEEP_FILES_S:
                    old.unlink()
            except OSError:
                pass
        fd, path = tempfile.mkstemp(prefix=f"sdxl-{result.seed}-", suffix=f".{result.extension}", dir=self.directory)
        with os.fdopen(fd, "wb") as handle:
            handle.write(result.image)
        return path


def _request_from_controls(
    prompt: str,
    negative_prompt: str,
    seed: float | None,
    random_seed: bool,
    steps: float,
    guidance_scale: float,
    size: str,
    output_format: str,
) -> GenerationRequest:
    if random_seed:
        chosen_seed = None
    else:
        if seed is None:
            raise ApiError("Enter a seed, or tick “Random seed”.", kind="invalid_request", param="seed")
        chosen_seed = int(seed)
        if not 0 <= chosen_seed <= MAX_SEED:
            raise ApiError(f"The seed must be between 0 and {MAX_SEED}.", kind="invalid_request", param="seed")
    return GenerationRequest(
        prompt=prompt or "",
        negative_prompt=(negative_prompt or "").strip() or None,
        seed=chosen_seed,
        steps=int(steps) if steps is not None else None,
        guidance_scale=float(guidance_scale) if guidance_scale is not None else None,
        size=size or None,
        output_format=output_format or None,
    )


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _edit_inputs(editor_value: dict | None) -> tuple[bytes, bytes | None]:
    """The image editor's picture as PNG, and a mask PNG under OpenAI's rule (transparent where the visitor
    painted; None when nothing was painted: the whole image is re-drawn)."""
    from PIL import Image, ImageChops

    background = (editor_value or {}).get("background")
    if background is None:
        raise ApiError("Upload an image to edit first.", kind="invalid_request", param="image")
    image = background.convert("RGBA")
    painted = Image.new("L", image.size, 0)
    for layer in (editor_value or {}).get("layers") or []:
        if layer is not None:
            alpha = layer.convert("RGBA").getchannel("A")
            painted = ImageChops.lighter(painted, alpha.resize(image.size))
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    picture = _png(Image.alpha_composite(white, image).convert("RGB"))
    if painted.getbbox() is None:
        return picture, None
    mask = Image.new("RGBA", image.size, (0, 0, 0, 255))
    mask.putalpha(painted.point(lambda value: 0 if value else 255))
    return picture, _png(mask)


def _guidance_minimum(info: ServiceInfo) -> float:
    """The slider's lowest value: 0, or just above what the service's model requires (exclusiveMinimum)."""
    return 0.0 if info.guidance_above is None else round(info.guidance_above + _GUIDANCE_STEP, 6)


def _refusal_message(visitor_key: str | None) -> str:
    """What to tell the visitor when the API refuses the key (or the lack of one)."""
    if visitor_key:
        return "The service refused this API key (HTTP 401). Check the key in “API key”."
    return "This service needs an API key: enter yours in “API key” and try again."


def build_blocks(args: UIArgs, *, image_dir: Path | None = None) -> gr.Blocks:
    """The Gradio page. Controls start at the API's documented defaults and follow /info on each page load.

    Without an ``api_key_env`` of its own the page holds no secret: when the API needs a key, it shows an
    "API key" field and passes each visitor's key through, so the UI never opens a keyed API to everyone.
    """
    import gradio as gr

    own_key = api_key_from_env(args)
    store = _ImageStore(image_dir)
    defaults = ServiceInfo()
    info_timeout = min(args.request_timeout_s, 10.0)

    def run(request: GenerationRequest, visitor_key: str | None) -> tuple[Any, ...]:
        visitor_key = None if own_key else (visitor_key or "").strip() or None
        call = edit if isinstance(request, EditRequest) else generate
        try:
            result = call(args.api_url, request, api_key=own_key or visitor_key, timeout_s=args.request_timeout_s)
        except ApiError as error:
            message = error.message
            if error.kind == "unauthorized" and not own_key:
                message = _refusal_message(visitor_key)
            # Clear the image: a stale or placeholder picture next to an error would read as a result.
            # The last good request is kept, so "Reproduce" still repeats it.
            return None, _error_html(message), "", "", gr.skip()
        path = store.save(result)
        elapsed = f"{result.generation_ms / 1000:.2f} s" if result.generation_ms is not None else "not reported"
        # Remember the request with the seed the service used: replaying it reproduces this image.
        pinned = dataclasses.replace(request, seed=result.seed)
        return path, _ok_html(result.summary()), str(result.seed), elapsed, pinned

    def on_generate(
        prompt, negative_prompt, seed, random_seed, steps, guidance_scale, size, output_format, visitor_key
    ):
        try:
            request = _request_from_controls(
                prompt, negative_prompt, seed, random_seed, steps, guidance_scale, size, output_format
            )
        except ApiError as error:
            return None, _error_html(error.message), "", "", gr.skip()
        return run(request, visitor_key)

    def on_edit(
        editor_value,
        strength,
        prompt,
        negative_prompt,
        seed,
        random_seed,
        steps,
        guidance_scale,
        size,
        output_format,
        visitor_key,
    ):
        try:
            request = _request_from_controls(
                prompt, negative_prompt, seed, random_seed, steps, guidance_scale, size, output_format
            )
            image_png, mask_png = _edit_inputs(editor_value)
        except ApiError as error:
            return None, _error_html(error.message), "", "", gr.skip()
        edit_request = EditRequest(
            **dataclasses.asdict(request),
            image=image_png,
            mask=mask_png,
            strength=float(strength) if strength is not None else None,
        )
        return run(edit_request, visitor_key)

    def on_reproduce(last: GenerationRequest | None, visitor_key: str | None):
        if last is None:
            message = "Generate an image first; “Reproduce” repeats the last one with its seed."
            return None, _error_html(message), "", "", gr.skip(), gr.skip(), gr.skip()
        # Same parameters and the seed the service reported: the same image, byte for byte. The seed
        # controls are set to it too, so the user sees (and can tweak from) what is being repeated.
        return (*run(last, visitor_key), gr.update(value=last.seed), gr.update(value=False))

    def on_load():
        try:
            # /info is open even on a keyed API; it says whether generation needs a key.
            info = fetch_info(args.api_url, api_key=own_key, timeout_s=info_timeout)
        except ApiError as error:
            return (
                _error_html(f"Cannot read the service's settings from /info. {error.message}"),
                f"Service: {args.api_url} (not answering yet; controls show the API's defaults)",
                gr.update(),
                gr.update(),
                gr.update(),
                gr.update(),
                gr.update(),
            )
        return (
            "",
            f"Service: {info.summary()}",
            gr.update(maximum=info.max_steps, value=info.default_steps),
            gr.update(
                minimum=_guidance_minimum(info), maximum=info.max_guidance_scale, value=info.default_guidance_scale
            ),
            gr.update(choices=list(info.image_sizes), value=info.default_size),
            gr.update(choices=list(info.output_formats), value=info.default_output_format),
            gr.update(visible=info.auth_required and own_key is None),
        )

    with gr.Blocks(title=args.title, delete_cache=(_KEEP_FILES_S, _KEEP_FILES_S)) as blocks:
        gr.Markdown(f"# {html.escape(args.title)}")
        service_line = gr.Markdown(f"Service: connecting to {args.api_url} …", elem_id="service-info")
        with gr.Row():
            with gr.Column(scale=1):
                visitor_key = gr.Textbox(
                    label="API key",
                    type="password",
                    visible=False,
                    elem_id="api-key",
                    info="This service needs a key; it is sent to the API with each request and not stored.",
                )
                prompt = gr.Textbox(
                    label="Prompt", lines=3, placeholder="an astronaut dancing on green grass, sunlit", elem_id="prompt"
                )
                negative_prompt = gr.Textbox(
                    label="Negative prompt", lines=2, placeholder="blurry, low quality", elem_id="negative-prompt"
                )
                with gr.Row():
                    random_seed = gr.Checkbox(label="Random seed", value=True, elem_id="random-seed")
                    seed = gr.Number(
                        label="Seed (used when “Random seed” is off)",
                        value=0,
                        precision=0,
                        minimum=0,
                        maximum=MAX_SEED,
                        elem_id="seed",
                    )
                steps = gr.Slider(
                    label="Steps",
                    minimum=1,
                    maximum=defaults.max_steps,
                    value=defaults.default_steps,
                    step=1,
                    elem_id="steps",
                )
                guidance = gr.Slider(
                    label="Guidance scale",
                    minimum=_guidance_minimum(defaults),
                    maximum=defaults.max_guidance_scale,
                    value=defaults.default_guidance_scale,
                    step=_GUIDANCE_STEP,
                    elem_id="guidance",
                )
                with gr.Row():
                    size = gr.Dropdown(
                        label="Size", choices=list(defaults.image_sizes), value=defaults.default_size, elem_id="size"
                    )
                    output_format = gr.Radio(
                        label="Output format",
                        choices=list(defaults.output_formats),
                        value=defaults.default_output_format,
                        elem_id="output-format",
                    )
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    reproduce_button = gr.Button("Reproduce (same seed)", elem_id="reproduce")
                with gr.Accordion("Edit an image", open=False, elem_id="edit-section"):
                    editor = gr.ImageEditor(
                        label="Image to edit: paint where to change it (nothing painted: the whole image is re-drawn)",
                        type="pil",
                        sources=("upload", "clipboard"),
                        transforms=(),
                        elem_id="edit-image",
                    )
                    strength = gr.Slider(
                        label="Strength (how much is re-drawn)",
                        minimum=0.05,
                        maximum=1.0,
                        value=defaults.default_strength,
                        step=0.05,
                        elem_id="strength",
                    )
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
            with gr.Column(scale=1):
                image = gr.Image(label="Image", type="filepath", interactive=False, elem_id="result-image")
                status = gr.HTML("", elem_id="status")
                with gr.Row():
                    seed_used = gr.Textbox(label="Seed used", interactive=False, elem_id="seed-used")
                    generation_time = gr.Textbox(label="Generation time", interactive=False, elem_id="generation-time")
        last = gr.State(None)

        outputs = [image, status, seed_used, generation_time, last]
        controls = [prompt, negative_prompt, seed, random_seed, steps, guidance, size, output_format, visitor_key]
        # api_name=False: the page is for people; scripts have the API itself (and its key check).
        generate_button.click(on_generate, inputs=controls, outputs=outputs, api_name=False)
        prompt.submit(on_generate, inputs=controls, outputs=outputs, api_name=False)
        edit_button.click(on_edit, inputs=[editor, strength, *controls], outputs=outputs, api_name=False)
        reproduce_button.click(
            on_reproduce, inputs=[last, visitor_key], outputs=[*outputs, seed, random_seed], api_name=False
        )
        blocks.load(
            on_load, outputs=[status, service_line, steps, guidance, size, output_format, visitor_key], api_name=False
        )

    # The API does its own admission control (503 when full); the UI should pass requests on, not queue them one by one.
    blocks.queue(default_concurrency_limit=16)
    return blocks


def build_asgi_app(args: UIArgs, *, image_dir: Path | None = None):
    """The Gradio page as an ASGI app, ready to sit under any route prefix (it reads ``scope['root_path']``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from starlette.applications import Starlette

    blocks = build_blocks(args, image_dir=image_dir)
    # A bare Starlette parent is enough: mount_gradio_app only mounts Gradio's own app and chains its
    # lifespan (which starts Gradio's queue) into the parent's, which Serve runs at replica start.
    return gr.mount_gradio_app(
        Starlette(), blocks, path="/", footer_links=[], css=_CSS, ssr_mode=False, max_file_size=_MAX_UPLOAD
    )


def _serve_deployment():
    from ray import serve

    @serve.deployment(
        name="SDXLWebUI",
        # Gradio keeps each browser session's queue in its process: more than one replica would need
        # sticky sessions. One small replica is plenty; the API behind it is what scales.
        num_replicas=1,
        ray_actor_options={"num_cpus": 0.1},
        max_ongoing_requests=64,
    )
    @serve.ingress()
    class SDXLWebUI:
        def __init__(self, raw_args: dict):
            self._args = parse_ui_args(raw_args)

        def __serve_build_asgi_app__(self):
            return build_asgi_app(self._args)

    return SDXLWebUI


def build_ui_app(args: dict | None = None):
    """Serve application builder (``import_path: app.ui:build_ui_app``).

    Arguments are validated here, in the Serve controller, so a typo fails the deploy with a message
    naming the field instead of crash-looping the replica.
    """
    ui_args = parse_ui_args(args)
    # The key named by api_key_env is read in the replica (where the Secret is mounted), not here.
    return _serve_deployment().bind(ui_args.model_dump())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the SDXL web UI against a running API (no Ray needed).")
    parser.add_argument("--api-url", default=UIArgs().api_url, help="base URL of the API, route prefix included")
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    parser.add_argument("--request-timeout-s", type=float, default=UIArgs().request_timeout_s)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    options = parser.parse_args(argv)
    try:
        ui_args = parse_ui_args(
            {
                "api_url": options.api_url,
                "api_key_env": options.api_key_env,
                "request_timeout_s": options.request_timeout_s,
            }
        )
    except InvalidUIArgs as error:
        parser.error(str(error))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    blocks = build_blocks(ui_args)
    print(f"SDXL web UI: http://{options.host}:{options.port}/  (API: {ui_args.api_url})", flush=True)
    blocks.launch(
        server_name=options.host,
        server_port=options.port,
        footer_links=[],
        css=_CSS,
        ssr_mode=False,
        max_file_size=_MAX_UPLOAD,
    )


if __name__ == "__main__":
    main()
