"""chart/values.schema.json is generated (ci/values_schema.py), never edited: the app's own model states the
bounds of every value that becomes an app argument, values.yaml's comments every description, and the chart
and the app refuse the same values."""

from __future__ import annotations

import json

import pytest

from app.config import InvalidAppArgs, parse_app_args
from tests.chart.chartlib import CHART_DIR, render, render_error, set_values, values_schema_generator

generator = values_schema_generator


def test_the_committed_schema_is_the_generated_one():
    committed = (CHART_DIR / "values.schema.json").read_text()
    assert committed == generator().render(), "stale: run .venv/bin/python ci/values_schema.py"


def test_every_description_is_the_values_yaml_comment():
    module = generator()
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    for path, comment in module.documented_comments().items():
        node = schema
        for key in path.split("."):
            node = node["properties"][key]
        assert node["description"] == comment, path


def test_app_argument_bounds_come_from_the_app():
    from app.config import SIZE_PATTERN, AppArgs

    schema = json.loads((CHART_DIR / "values.schema.json").read_text())["properties"]
    app = AppArgs.model_json_schema()["properties"]
    assert schema["generation"]["properties"]["maxSteps"]["maximum"] == app["max_steps"]["maximum"]
    assert schema["model"]["properties"]["batchWaitTimeoutS"]["maximum"] == app["batch_wait_timeout_s"]["maximum"]
    assert schema["model"]["properties"]["backend"]["enum"] == app["backend"]["enum"]
    assert schema["model"]["properties"]["imageSizes"]["items"]["pattern"] == SIZE_PATTERN


# A distinct valid value for each key of the generator's key map, to find it in the rendered args.
DISTINCT = {
    "model.id": "my-org/sdxl",
    "model.revision": "abc",
    "model.backend": "cuda",
    "model.imageSizes": ["1016x768"],
    "model.batchSize": 3,
    "model.batchWaitTimeoutS": 0.7,
    "model.warmup": False,
    "neuronCoresPerReplica": 4,
    "generation.defaultSteps": 11,
    "generation.maxSteps": 33,
    "generation.defaultGuidanceScale": 4.5,
    "generation.maxGuidanceScale": 11.5,
    "generation.maxPromptChars": 345,
    "generation.maxImagesPerRequest": 5,
    "generation.maxBodyBytes": 23456,
    "generation.defaultOutputFormat": "webp",
    "generation.pngCompressLevel": 7,
    "generation.jpegQuality": 66,
    "generation.webpQuality": 77,
    "apiKey.envName": "OTHER_KEY",
    "generation.defaultStrength": 0.55,
    "generation.maxUploadBytes": 3000000,
    "generation.maxUploadPixels": 5000000,
    "monitoring.logPrompts": True,
}


def values_for(assignments: dict) -> dict:
    values: dict = {}
    for path, value in assignments.items():
        cursor = values
        *parents, leaf = path.split(".")
        for key in parents:
            cursor = cursor.setdefault(key, {})
        cursor[leaf] = value
    return values


def test_the_generators_key_map_is_the_one_the_chart_renders():
    key_map = generator().APP_ARGS
    assert set(DISTINCT) == set(key_map)
    values = values_for({**DISTINCT, "apiKey.existingSecret": "key", "serve.maxOngoingRequests": 8, "replicas": 6})
    args = render(values).application()["args"]
    for path, field in key_map.items():
        assert args[field] == DISTINCT[path], path
    assert set(args) == set(key_map.values())


@pytest.mark.parametrize(
    "expression",
    [
        "generation.defaultSteps=40,generation.maxSteps=30",
        "generation.defaultGuidanceScale=12,generation.maxGuidanceScale=10",
        "model.imageSizes={1024x1024,768x768}",
        "model.imageSizes={1020x1024}",
        "model.imageSizes={4096x4096}",
        "model.imageSizes={1024x1024,1024x1024}",
        "model.batchSize=17",
    ],
)
def test_the_chart_and_the_app_refuse_the_same_values(expression):
    values = set_values(expression)
    render_error(values)  # the chart refuses (render_error fails the test if it renders)

    def leaves(node: dict, prefix: str = ""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    key_map = generator().APP_ARGS
    args = {key_map[path]: value for path, value in leaves(values)}  # every value here is an app argument
    with pytest.raises(InvalidAppArgs):
        parse_app_args({"backend": "neuron", **args})
