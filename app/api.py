"""Request fields and parsing: HTTP query strings and JSON bodies ↔ typed :class:`~app.jobs.ImageJob` lists.

Every request field is declared once in :data:`REQUEST_FIELDS` (type, bounds, default, description);
the same table parses ``GET /imagine`` query strings and ``POST /v1/images/generations`` JSON bodies,
and :func:`request_schema` publishes it as JSON Schema on ``GET /info``, from which clients (the UI)
build their controls.

Pure Python: no torch, no Ray; unit-testable without a cluster.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from app.config import MEDIA_TYPES, AppArgs, parse_size
from app.http import ApiError
from app.jobs import TASKS, GenerationRequest, ImageJob, Task

MAX_SEED = 2**32 - 1

#: OpenAI Images API options this service accepts but ignores (every OpenAI client sends ``model``).
IGNORED_OPENAI_FIELDS = frozenset({"model", "user"})


@dataclass(frozen=True)
class Rules:
    """What bounds a request: the deployment's args, and what the loaded model adds to them."""

    args: AppArgs
    #: ``guidance_scale`` must be greater than this on the loaded model (a compiled Neuron batch >= 2).
    guidance_must_exceed: float | None = None
    #: What the loaded model can do, and why it cannot edit when it cannot (e.g. no compiled VAE encoder).
    tasks: tuple[Task, ...] = TASKS
    why_no_editing: str | None = None


def invalid(param: str | None, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


#: Longest client-supplied name or value quoted back in an error message.
_QUOTE_LIMIT = 64


def quoted(text: str) -> str:
    """``text`` as an error message quotes it: repr-escaped (control characters, lone surrogates) and cut short."""
    shown = repr(text[:_QUOTE_LIMIT])
    return shown if len(text) <= _QUOTE_LIMIT else f"{shown}... ({len(text)} characters)"


def shown_number(value: int | float) -> str:
    """A number as error messages show it: integers exactly (abridged past 24 digits), floats with %g."""
    if isinstance(value, float):
        return f"{value:g}"
    digits = str(value)
    return digits if len(digits) <= 24 else f"{digits[:12]}... ({len(digits.lstrip('-'))} digits)"


# Plain ASCII decimal notation only: int()/float() would also take "1_000" and "١٢" (Arabic-Indic
# digits), which no client means as a number. nan/inf parse, to be refused as not finite.
_QUERY_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_QUERY_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?|nan|inf|infinity)", re.ASCII | re.IGNORECASE
)


# --------------------------------------------------------------------------------------------------
# The field table


_JSON_TYPES = {str: "string", int: "integer", float: "number"}


@dataclass(frozen=True)
class RequestField:
    """One request field: its type, bounds (which may depend on the deployment) and meaning."""

    name: str
    kind: type  # str, int or float
    description: str
    #: Inclusive (min, max) for numbers, or (min_len, max_len) for strings; ``None`` = unbounded.
    bounds: Callable[[Rules], tuple[float, float]] | None = None
    #: A value the field must be greater than (given the loaded model), with the reason; None = no such rule.
    exceeds: Callable[[Rules], tuple[float, str] | None] | None = None
    #: Allowed values for enumerations (given the deployment's args).
    choices: Callable[[Rules], tuple[str, ...]] | None = None
    #: The value used when the request omits the field (``None`` = absent / chosen at random).
    default: Callable[[Rules], Any] | None = None
    required: bool = False

    def json_schema(self, rules: Rules) -> dict:
        """The field as JSON Schema (what ``/info`` publishes)."""
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.kind], "description": self.description}
        if self.bounds:
            low, high = self.bounds(rules)
            keys = ("minLength", "maxLength") if self.kind is str else ("minimum", "maximum")
            schema.update(zip(keys, (low, high), strict=True))
        floor = self.exceeds(rules) if self.exceeds else None
        if floor:
            schema["exclusiveMinimum"] = floor[0]
        if self.choices:
            schema["enum"] = list(self.choices(rules))
        if self.default:
            schema["default"] = self.default(rules)
        return schema

    def coerce(self, raw: Any, *, from_query: bool) -> Any:
        """Turn a query string or a JSON value into ``kind``; raise :class:`ApiError` naming the field."""
        if self.kind is str:
            if not isinstance(raw, str):
                raise invalid(self.name, f"'{self.name}' must be a string", "invalid_type")
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate, which JSON's \\uD800 escapes can produce
                raise invalid(
                    self.name, f"'{self.name}' must be valid Unicode text (it has a lone surrogate)", "invalid_value"
                ) from None
            return raw
        if from_query:
            text = raw.strip()
            pattern = _QUERY_INT if self.kind is int else _QUERY_FLOAT
            if not pattern.fullmatch(text):
                raise invalid(
                    self.name, f"'{self.name}' must be {_article(self.kind)}, got {quoted(raw)}", "invalid_type"
                )
            try:
                value = int(text) if self.kind is int else float(text)
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                raise invalid(self.name, f"'{self.name}' has too many digits ({len(text)})", "out_of_range") from None
        else:
            # bool is an int in Python but never a number in a request.
            numeric = (int,) if self.kind is int else (int, float)
            if isinstance(raw, bool) or not isinstance(raw, numeric):
                raise invalid(self.name, f"'{self.name}' must be {_article(self.kind)}", "invalid_type")
            try:
                value = raw if self.kind is int else float(raw)
            except OverflowError:  # an integer too large for a float
                raise invalid(
                    self.name, f"'{self.name}' must be a finite number, got {shown_number(raw)}", "out_of_range"
                ) from None
        if self.kind is float and not math.isfinite(value):
            raise invalid(self.name, f"'{self.name}' must be a finite number", "invalid_value")
        return value

    def check(self, value: Any, rules: Rules) -> Any:
        """Apply bounds and choices to a coerced value."""
        if self.bounds:
            low, high = self.bounds(rules)
            if self.kind is str:
                if not low <= len(value) <= high:
                    if len(value) < low:
                        rule = "must not be empty" if low == 1 else f"must have at least {low} characters"
                    else:
                        rule = f"must be at most {high} characters (got {len(value)})"
                    code = "missing_value" if len(value) < low else "too_long"
                    raise invalid(self.name, f"'{self.name}' {rule}", code)
            elif not low <= value <= high:
                raise invalid(
                    self.name,
                    f"'{self.name}' must be between {shown_number(low)} and {shown_number(high)}, "
                    f"got {shown_number(value)}",
                    "out_of_range",
                )
        floor = self.exceeds(rules) if self.exceeds else None
        if floor and not value > floor[0]:
            raise invalid(
                self.name,
                f"'{self.name}' must be greater than {shown_number(floor[0])} on this model "
                f"(got {shown_number(value)}): {floor[1]}",
                "out_of_range",
            )
        if self.choices:
            allowed = self.choices(rules)
            if value not in allowed:
                raise invalid(
                    self.name,
                    f"'{self.name}' must be one of {', '.join(allowed)}; got {quoted(value)}",
                    "unsupported_value",
                )
        return value


def _article(kind: type) -> str:
    return "an integer" if kind is int else "a number"


def _guidance_floor(rules: Rules) -> tuple[float, str] | None:
    if rules.guidance_must_exceed is None:
        return None
    return rules.guidance_must_exceed, "its compiled batch runs only with classifier-free guidance"


_FIELDS = [
    RequestField("prompt", str, "What to draw.", bounds=lambda r: (1, r.args.max_prompt_chars), required=True),
    RequestField("negative_prompt", str, "What to avoid.", bounds=lambda r: (0, r.args.max_prompt_chars)),
    RequestField(
        "seed",
        int,
        "Random seed; the same seed and settings give the same image. Random when absent.",
        bounds=lambda r: (0, MAX_SEED),
    ),
    RequestField(
        "steps",
        int,
        "Denoising steps (more: slower, finer).",
        bounds=lambda r: (1, r.args.max_steps),
        default=lambda r: r.args.default_steps,
    ),
    RequestField(
        "guidance_scale",
        float,
        "How strongly the image follows the prompt (classifier-free guidance).",
        bounds=lambda r: (0.0, r.args.max_guidance_scale),
        exceeds=_guidance_floor,
        default=lambda r: r.args.default_guidance_scale,
    ),
    RequestField(
        "width",
        int,
        "Image width in pixels (GET /imagine; with height, one of the configured sizes).",
        bounds=lambda r: (min(w for w, _ in r.args.sizes), max(w for w, _ in r.args.sizes)),
        default=lambda r: r.args.default_size[0],
    ),
    RequestField(
        "height",
        int,
        "Image height in pixels (GET /imagine; with width, one of the configured sizes).",
        bounds=lambda r: (min(h for _, h in r.args.sizes), max(h for _, h in r.args.sizes)),
        default=lambda r: r.args.default_size[1],
    ),
    RequestField(
        "size",
        str,
        "'WIDTHxHEIGHT' (POST /v1/images/generations; one of the configured sizes).",
        choices=lambda r: r.args.image_sizes,
        default=lambda r: r.args.image_sizes[0],
    ),
    RequestField(
        "output_format",
        str,
        "Image encoding.",
        choices=lambda r: tuple(MEDIA_TYPES),
        default=lambda r: r.args.default_output_format,
    ),
    RequestField(
        "n",
        int,
        "Number of images (POST /v1/images/generations); image i uses seed + i.",
        bounds=lambda r: (1, r.args.max_images_per_request),
        default=lambda r: 1,
    ),
    RequestField(
        "response_format",
        str,
        "Only 'b64_json' (the service stores no images, so it has no URLs to return).",
        choices=lambda r: ("b64_json",),
        default=lambda r: "b64_json",
    ),
    RequestField(
        "strength",
        float,
        "POST /v1/images/edits: the share of the denoising steps run on the input image (1 ignores it); "
        "steps x strength must reach 1.",
        bounds=lambda r: (0.0, 1.0),
        exceeds=lambda r: (0.0, "0 would run no step on the input image"),
        default=lambda r: r.args.default_strength,
    ),
]

#: Every request field, declared once.
REQUEST_FIELDS: dict[str, RequestField] = {f.name: f for f in _FIELDS}

_COMMON = ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "output_format")
IMAGINE_FIELDS = _COMMON + ("width", "height")
OPENAI_FIELDS = _COMMON + ("n", "size", "response_format")
EDIT_FIELDS = OPENAI_FIELDS + ("strength",)
#: The files of POST /v1/images/edits (multipart/form-data), described as the published schema shows them.
EDIT_FILES = {
    "image": "The image to edit: PNG, JPEG or WebP, one frame; scaled to cover 'size' and centre-cropped.",
    "mask": "Optional. PNG or WebP with transparency, the image's size: fully transparent pixels mark where to "
    "re-draw (inpainting); without it the whole image is re-drawn (img2img).",
}


# --------------------------------------------------------------------------------------------------
# Parsing


def _collect(values: dict[str, Any], allowed: tuple[str, ...], rules: Rules, *, from_query: bool) -> dict[str, Any]:
    """Coerce and check every given field of ``allowed``; fill defaults for absent ones."""
    parsed: dict[str, Any] = {}
    for name in allowed:
        spec = REQUEST_FIELDS[name]
        if name in values and values[name] is not None:
            parsed[name] = spec.check(spec.coerce(values[name], from_query=from_query), rules)
        elif spec.required:
            raise invalid(name, f"'{name}' is required", "missing_value")
        elif spec.default:
            parsed[name] = spec.default(rules)
    if not parsed["prompt"].strip():
        raise invalid("prompt", "'prompt' must contain more than whitespace", "missing_value")
    return parsed


def _jobs(parsed: dict, width: int, height: int, count: int) -> tuple[ImageJob, ...]:
    first_seed = parsed["seed"] if "seed" in parsed else secrets.randbelow(MAX_SEED + 1)
    return tuple(
        ImageJob(
            prompt=parsed["prompt"],
            negative_prompt=parsed.get("negative_prompt"),
            # Image i uses seed + i, wrapping so every seed stays a valid 32-bit generator seed.
            seed=(first_seed + index) % (MAX_SEED + 1),
            steps=parsed["steps"],
            guidance_scale=parsed["guidance_scale"],
            width=width,
            height=height,
        )
        for index in range(count)
    )


def parse_imagine_query(query: list[tuple[str, str]], rules: Rules) -> GenerationRequest:
    """Validate ``GET /imagine``'s query string (as a list of key/value pairs)."""
    values: dict[str, str] = {}
    for key, value in query:
        if key not in IMAGINE_FIELDS:
            raise invalid(
                key[:_QUOTE_LIMIT],
                f"unknown query parameter {quoted(key)}; accepted: {', '.join(IMAGINE_FIELDS)}",
                "unknown_parameter",
            )
        if key in values:
            raise invalid(key, f"query parameter '{key}' is given more than once", "duplicate_parameter")
        values[key] = value
    parsed = _collect(values, IMAGINE_FIELDS, rules, from_query=True)
    size = (parsed["width"], parsed["height"])
    if size not in rules.args.sizes:
        param = "width" if "width" in values or "height" not in values else "height"
        raise invalid(
            param,
            f"size {size[0]}x{size[1]} is not served; "
            f"'width'x'height' must be one of {', '.join(rules.args.image_sizes)}",
            "unsupported_value",
        )
    return GenerationRequest(jobs=_jobs(parsed, *size, count=1), output_format=parsed["output_format"])


def parse_openai_body(body: Any, rules: Rules) -> GenerationRequest:
    """Validate a ``POST /v1/images/generations`` JSON body (already decoded)."""
    if not isinstance(body, dict):
        raise invalid(None, "the request body must be a JSON object", "invalid_json")
    _unknown_openai_keys(body, OPENAI_FIELDS)
    for key in IGNORED_OPENAI_FIELDS & body.keys():
        if body[key] is not None and not isinstance(body[key], str):
            raise invalid(key, f"'{key}' must be a string", "invalid_type")
    parsed = _collect(body, OPENAI_FIELDS, rules, from_query=False)
    width, height = parse_size(parsed["size"])
    return GenerationRequest(
        jobs=_jobs(parsed, width, height, count=parsed["n"]), output_format=parsed["output_format"]
    )


def _unknown_openai_keys(keys, allowed: tuple[str, ...]) -> None:
    for key in keys:
        if key not in allowed and key not in IGNORED_OPENAI_FIELDS:
            raise invalid(
                key[:_QUOTE_LIMIT],
                f"{quoted(key)} is not supported by this service; supported fields: {', '.join(allowed)}",
                "unsupported_parameter",
            )


def parse_edit_form(upload, rules: Rules) -> GenerationRequest:
    """Validate a ``POST /v1/images/edits`` body (an :class:`app.uploads.Upload`): fields, then the files."""
    from app.uploads import fit, mask_from, open_image, to_rgb

    _unknown_openai_keys(list(upload.fields) + list(upload.files), EDIT_FIELDS + tuple(EDIT_FILES))
    if "image" not in upload.files:
        raise invalid("image", "'image' is required: the image to edit, as a multipart file", "missing_value")
    parsed = _collect(upload.fields, EDIT_FIELDS, rules, from_query=True)
    task: Task = "inpaint" if "mask" in upload.files else "img2img"
    if task not in rules.tasks:
        raise invalid(
            "image", f"this model cannot do {task}: {rules.why_no_editing or 'not supported'}", "unsupported_value"
        )
    if int(parsed["steps"] * parsed["strength"]) < 1:
        raise invalid(
            "strength",
            f"'steps' x 'strength' ({parsed['steps']} x {shown_number(parsed['strength'])}) runs "
            "no denoising step: raise either",
            "out_of_range",
        )
    width, height = parse_size(parsed["size"])
    max_pixels = rules.args.max_upload_pixels
    uploaded = open_image(upload.files["image"], "image", max_pixels)
    image = fit(to_rgb(uploaded), width, height)
    mask = None
    if task == "inpaint":
        mask = fit(
            mask_from(open_image(upload.files["mask"], "mask", max_pixels), uploaded), width, height, resample=0
        )  # nearest: the mask stays two-valued
    jobs = tuple(
        replace(job, task=task, image=image, mask=mask, strength=parsed["strength"])
        for job in _jobs(parsed, width, height, count=parsed["n"])
    )
    return GenerationRequest(jobs=jobs, output_format=parsed["output_format"])


# --------------------------------------------------------------------------------------------------
# Publishing


def _route_schema(names: tuple[str, ...], rules: Rules, extra: dict[str, dict] | None = None) -> dict:
    properties = {name: REQUEST_FIELDS[name].json_schema(rules) for name in names}
    properties.update(extra or {})
    required = [name for name in names if REQUEST_FIELDS[name].required]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def request_schema(rules: Rules) -> dict:
    """Each route's request as JSON Schema: the contract ``/info`` publishes and clients build forms from.

    ``images_edits`` describes the multipart form: its text fields as their values, the files as binary
    strings (OpenAPI's convention); it is present only when the model can edit.
    """
    ignored = {
        name: {"type": "string", "description": "Accepted and ignored (OpenAI clients send it)."}
        for name in sorted(IGNORED_OPENAI_FIELDS)
    }
    schemas = {
        "imagine": _route_schema(IMAGINE_FIELDS, rules),
        "images_generations": _route_schema(OPENAI_FIELDS, rules, ignored),
    }
    if {"img2img", "inpaint"} & set(rules.tasks):
        files = {name: {"type": "string", "format": "binary", "description": text} for name, text in EDIT_FILES.items()}
        edits = _route_schema(EDIT_FIELDS, rules, {**files, **ignored})
        edits["required"] = ["image", *edits["required"]]
        schemas["images_edits"] = edits
    return schemas
