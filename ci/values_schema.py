#!/usr/bin/env python3
"""Generate chart/values.schema.json from the places that already state each fact, once:

* the types and bounds of values that become app arguments (``model.*``, ``generation.*``, ...): the app's
  own pydantic model, ``AppArgs.model_json_schema()``, through :data:`APP_ARGS`, the chart's key map
  (the same one ``sdxl.appArgs`` in templates/_helpers.tpl renders; a test keeps them equal);
* every other value's type and bounds, and the shared Kubernetes shapes (resources, tolerations, label
  maps, NetworkPolicy peers) as ``definitions``: chart/schema/values.skeleton.yaml;
* every description: the ``# --`` comment above the key in chart/values.yaml (for a key without one,
  a section, the skeleton says what it holds);
* ``required``: every key values.yaml sets (a null default leaves a key optional).

    .venv/bin/python ci/values_schema.py           # rewrite chart/values.schema.json
    .venv/bin/python ci/values_schema.py --check   # exit 1 if the committed file differs
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHART = REPO / "chart"
VALUES = CHART / "values.yaml"
SKELETON = CHART / "schema" / "values.skeleton.yaml"
OUTPUT = CHART / "values.schema.json"

#: Chart value (dotted path) -> the AppArgs field it becomes in serveConfigV2 ``args``.
APP_ARGS = {
    "model.id": "model_id",
    "model.revision": "model_revision",
    "model.backend": "backend",
    "model.imageSizes": "image_sizes",
    "model.batchSize": "batch_size",
    "model.batchWaitTimeoutS": "batch_wait_timeout_s",
    "model.warmup": "warmup",
    "neuronCoresPerReplica": "neuron_cores_per_replica",
    "generation.defaultSteps": "default_steps",
    "generation.maxSteps": "max_steps",
    "generation.defaultGuidanceScale": "default_guidance_scale",
    "generation.maxGuidanceScale": "max_guidance_scale",
    "generation.maxPromptChars": "max_prompt_chars",
    "generation.maxImagesPerRequest": "max_images_per_request",
    "generation.maxBodyBytes": "max_body_bytes",
    "generation.defaultOutputFormat": "default_output_format",
    "generation.defaultStrength": "default_strength",
    "generation.maxUploadBytes": "max_upload_bytes",
    "generation.maxUploadPixels": "max_upload_pixels",
    "generation.pngCompressLevel": "png_compress_level",
    "generation.jpegQuality": "jpeg_quality",
    "generation.webpQuality": "webp_quality",
    "apiKey.envName": "api_key_env",
    "monitoring.logPrompts": "log_prompts",
}

#: pydantic keywords that describe the Python model rather than the value.
_PYDANTIC_ONLY = {"title", "default", "description"}
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9]*):(?P<rest>.*)$")


def documented_comments() -> dict[str, str]:
    """Dotted key -> its ``# --`` comment in values.yaml, joined into one line."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in VALUES.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
            continue
        match = _KEY_LINE.match(line)
        if not match:
            if not stripped.startswith("#"):
                pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([key for _, key in stack] + [match["key"]])
        if pending:
            comments[path] = " ".join(pending)
            pending = []
        stack.append((indent, match["key"]))
    return comments


def app_arg_schema(field: str) -> dict:
    """The AppArgs field's JSON schema as a chart value: an optional field is the empty string when unset."""
    from app.config import SIZE_PATTERN, AppArgs

    schema = copy.deepcopy(AppArgs.model_json_schema()["properties"][field])
    if "anyOf" in schema:  # X | None: the chart writes "" for None and leaves the key out of args
        (schema,) = [branch for branch in schema["anyOf"] if branch.get("type") != "null"]
    schema = {key: value for key, value in schema.items() if key not in _PYDANTIC_ONLY}
    if field == "image_sizes":  # AppArgs checks each size in a validator: the pattern is its first half
        schema["items"] = {"type": "string", "pattern": SIZE_PATTERN}
        schema["uniqueItems"] = True
    return schema


def build(node: dict, path: str, defaults, comments: dict[str, str]) -> dict:
    node = copy.deepcopy(node)
    field = node.pop("appArg", None)
    if field:
        node = {**app_arg_schema(field), **node}
        if APP_ARGS.get(path) != field:
            raise SystemExit(f"{path}: skeleton says appArg {field}, the key map says {APP_ARGS.get(path)}")
    description = comments.get(path) or node.get("description")
    if not description:
        raise SystemExit(f"{path}: no '# --' comment in values.yaml and no description in the skeleton")
    node["description"] = description
    if "properties" in node and "$ref" not in node:
        node.setdefault("type", "object")
        node.setdefault("additionalProperties", False)
        children = defaults if isinstance(defaults, dict) else {}
        node["properties"] = {
            key: build(child, f"{path}.{key}" if path else key, children.get(key), comments)
            for key, child in node["properties"].items()
        }
        unknown = set(children) - set(node["properties"])
        if unknown:
            raise SystemExit(f"{path or '<root>'}: values.yaml keys missing from the skeleton: {sorted(unknown)}")
        node["required"] = sorted(key for key, value in children.items() if value is not None)
    ordered = {key: node[key] for key in ("type", "description") if key in node}
    ordered.update((key, value) for key, value in node.items() if key not in ordered)
    return ordered


def generate() -> dict:
    skeleton = yaml.safe_load(SKELETON.read_text())
    defaults = yaml.safe_load(VALUES.read_text())
    comments = documented_comments()
    missing = set(APP_ARGS) - set(comments)
    if missing:
        raise SystemExit(f"app-argument values without a '# --' comment: {sorted(missing)}")
    root = build({key: value for key, value in skeleton.items() if key != "definitions"}, "", defaults, comments)
    # Draft-07: the draft Helm's validator applies (it ignores 2019-09 keywords such as dependentRequired).
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the sdxl chart",
        **root,
        "definitions": skeleton["definitions"],
    }


def render() -> str:
    return json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(REPO)} is stale: run .venv/bin/python ci/values_schema.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
