"""Each value the chart turns into a manifest field reaches it: a value other than the default goes in, the
rendered field comes out equal to it (or to what the chart derives from it). A template that hard-coded a
field, or read the wrong value, fails here even when the default happens to match."""

from __future__ import annotations

import pytest

from tests.chart.chartlib import render


def deployment(rendered) -> dict:
    return rendered.sdxl_deployment


def autoscaling(rendered) -> dict:
    return rendered.sdxl_deployment["autoscaling_config"]


def app_args(rendered) -> dict:
    return rendered.application()["args"]


def worker(rendered) -> dict:
    return rendered.worker_group


def worker_container(rendered) -> dict:
    return rendered.worker_container


def cluster(rendered) -> dict:
    return rendered.rayservice["spec"]["rayClusterConfig"]


AUTOSCALING = {
    "autoscaling": {
        "enabled": True,
        "minReplicas": 2,
        "maxReplicas": 20,
        "targetOngoingRequests": 3,
        "upscaleDelayS": 7,
        "downscaleDelayS": 456,
        "initialReplicas": 5,
    },
    "workers": {"maxNodes": 2},
}

#: (values, where to look, the field, what it must equal)
SERVE_CONFIG = [
    ({"serve": {"maxOngoingRequests": 7}}, deployment, "max_ongoing_requests", 7),
    ({"serve": {"maxQueuedRequests": 11}}, deployment, "max_queued_requests", 11),
    ({"serve": {"gracefulShutdownTimeoutS": 33}}, deployment, "graceful_shutdown_timeout_s", 33),
    ({"serve": {"gracefulShutdownWaitLoopS": 3}}, deployment, "graceful_shutdown_wait_loop_s", 3),
    ({"serve": {"healthCheckPeriodS": 17}}, deployment, "health_check_period_s", 17),
    ({"serve": {"healthCheckTimeoutS": 19}}, deployment, "health_check_timeout_s", 19),
    ({"serve": {"replicaCpus": 3}}, lambda r: deployment(r)["ray_actor_options"], "num_cpus", 3),
    ({"serve": {"replicaMemoryMiB": 2048}}, lambda r: deployment(r)["ray_actor_options"], "memory", 2048 * 2**20),
    (
        {"neuronCoresPerReplica": 4, "replicas": 6},
        lambda r: deployment(r)["ray_actor_options"]["resources"],
        "neuron_cores",
        4,
    ),
    ({"replicas": 5}, deployment, "num_replicas", 5),
    (AUTOSCALING, autoscaling, "min_replicas", 2),
    (AUTOSCALING, autoscaling, "max_replicas", 20),
    (AUTOSCALING, autoscaling, "target_ongoing_requests", 3),
    (AUTOSCALING, autoscaling, "upscale_delay_s", 7),
    (AUTOSCALING, autoscaling, "downscale_delay_s", 456),
    (AUTOSCALING, autoscaling, "initial_replicas", 5),
    ({"serve": {"requestTimeoutS": 77}}, lambda r: r.serve_config["http_options"], "request_timeout_s", 77),
    (
        {"ui": {"enabled": True, "numCpus": 0.25}},
        lambda r: r.application("ui")["deployments"][0]["ray_actor_options"],
        "num_cpus",
        0.25,
    ),
    (
        {"ui": {"enabled": True, "apiUrl": "http://127.0.0.1:8000/api"}},
        lambda r: r.application("ui")["args"],
        "api_url",
        "http://127.0.0.1:8000/api",
    ),
]

APP_ARGS = [
    ({"model": {"id": "my-org/sdxl-neuron"}}, "model_id", "my-org/sdxl-neuron"),
    ({"model": {"revision": "0123abc"}}, "model_revision", "0123abc"),
    ({"model": {"backend": "cuda"}}, "backend", "cuda"),
    ({"model": {"imageSizes": ["1016x768"]}}, "image_sizes", ["1016x768"]),
    ({"model": {"batchSize": 2}, "serve": {"maxOngoingRequests": 4}}, "batch_size", 2),
    ({"model": {"batchWaitTimeoutS": 0.3}}, "batch_wait_timeout_s", 0.3),
    ({"model": {"warmup": False}}, "warmup", False),
    ({"neuronCoresPerReplica": 4, "replicas": 6}, "neuron_cores_per_replica", 4),
    ({"generation": {"defaultSteps": 12}}, "default_steps", 12),
    ({"generation": {"maxSteps": 44}}, "max_steps", 44),
    ({"generation": {"defaultGuidanceScale": 6.5}}, "default_guidance_scale", 6.5),
    ({"generation": {"maxGuidanceScale": 12.5}}, "max_guidance_scale", 12.5),
    ({"generation": {"maxPromptChars": 300}}, "max_prompt_chars", 300),
    ({"generation": {"maxImagesPerRequest": 3}}, "max_images_per_request", 3),
    ({"generation": {"maxBodyBytes": 20000}}, "max_body_bytes", 20000),
    ({"generation": {"defaultOutputFormat": "jpeg"}}, "default_output_format", "jpeg"),
    ({"generation": {"pngCompressLevel": 6}}, "png_compress_level", 6),
    ({"generation": {"jpegQuality": 70}}, "jpeg_quality", 70),
    ({"generation": {"webpQuality": 60}}, "webp_quality", 60),
    ({"generation": {"defaultStrength": 0.6}}, "default_strength", 0.6),
    ({"generation": {"maxUploadBytes": 1000000}}, "max_upload_bytes", 1000000),
    ({"generation": {"maxUploadPixels": 4000000}}, "max_upload_pixels", 4000000),
    ({"apiKey": {"existingSecret": "key", "envName": "MY_API_KEY"}}, "api_key_env", "MY_API_KEY"),
    ({"monitoring": {"logPrompts": True}}, "log_prompts", True),
]

# inf2.24xlarge: 12 NeuronCores, 6 devices, 96 vCPU, 384 GiB (EC2), written here independently of the chart.
INF2_24 = {
    "workers": {
        "instanceType": "inf2.24xlarge",
        "maxNodes": 3,
        "minNodes": 2,
        "headroom": {"cpu": 6, "memoryPercent": 20, "memoryGiB": 8},
    },
    "replicas": 12,
    "serve": {"replicaCpus": 4, "replicaMemoryMiB": 4096},
}
INF2_24_MEMORY_MIB = 384 * 1024 * 80 // 100 - 8 * 1024

WORKER_GROUP = [
    (INF2_24, worker, "groupName", "inf2-24xlarge"),
    (INF2_24, worker, "replicas", 2),  # 12 replicas / 6 per node, at least minNodes
    (INF2_24, worker, "minReplicas", 2),
    (INF2_24, worker, "maxReplicas", 3),
    (INF2_24, lambda r: worker(r)["resources"], "neuron_cores", "12"),
    (INF2_24, lambda r: worker_container(r)["resources"]["limits"], "cpu", "90"),
    (INF2_24, lambda r: worker_container(r)["resources"]["requests"], "memory", f"{INF2_24_MEMORY_MIB}Mi"),
    (INF2_24, lambda r: worker_container(r)["resources"]["limits"], "aws.amazon.com/neuroncore", "12"),
    (
        {**INF2_24, "workers": {**INF2_24["workers"], "neuronResource": "aws.amazon.com/neuron"}},
        lambda r: worker_container(r)["resources"]["limits"],
        "aws.amazon.com/neuron",
        "6",
    ),
    (
        INF2_24,
        lambda r: worker(r)["template"]["spec"]["nodeSelector"],
        "node.kubernetes.io/instance-type",
        "inf2.24xlarge",
    ),
    (
        {"workers": {"nodePool": "neuron"}},
        lambda r: worker(r)["template"]["spec"]["nodeSelector"],
        "karpenter.sh/nodepool",
        "neuron",
    ),
    (
        {"workers": {"nodeSelector": {"topology.kubernetes.io/zone": "us-west-2a"}}},
        lambda r: worker(r)["template"]["spec"]["nodeSelector"],
        "topology.kubernetes.io/zone",
        "us-west-2a",
    ),
    ({"workers": {"idleTimeoutSeconds": 321}}, lambda r: cluster(r)["autoscalerOptions"], "idleTimeoutSeconds", 321),
    (
        {"rayCluster": {"upscalingMode": "Conservative"}},
        lambda r: cluster(r)["autoscalerOptions"],
        "upscalingMode",
        "Conservative",
    ),
    ({"rayCluster": {"enableInTreeAutoscaling": False}}, cluster, "enableInTreeAutoscaling", False),
    ({"rayCluster": {"authMode": "disabled"}}, lambda r: cluster(r)["authOptions"], "mode", "disabled"),
    (
        {"head": {"nodePool": "system"}},
        lambda r: r.head_group["template"]["spec"]["nodeSelector"],
        "karpenter.sh/nodepool",
        "system",
    ),
    (
        {"head": {"resources": {"requests": {"cpu": "3", "memory": "6Gi"}, "limits": {"cpu": "5", "memory": "6Gi"}}}},
        lambda r: r.head_container["resources"]["limits"],
        "cpu",
        "5",
    ),
    ({"image": {"repository": "example.com/sdxl", "tag": "9.9"}}, worker_container, "image", "example.com/sdxl:9.9"),
    ({"image": {"pullPolicy": "Always"}}, worker_container, "imagePullPolicy", "Always"),
    (
        {"volumes": {"tmpSizeLimit": "7Gi"}},
        lambda r: {v["name"]: v for v in worker(r)["template"]["spec"]["volumes"]}["tmp"]["emptyDir"],
        "sizeLimit",
        "7Gi",
    ),
    ({"securityContext": {"runAsUser": 1234}}, lambda r: worker_container(r)["securityContext"], "runAsUser", 1234),
]


def field_id(case) -> str:
    values, _, field, _ = case
    return f"{field}<-{next(iter(values))}"


@pytest.mark.parametrize(
    ("values", "where", "field", "expected"), SERVE_CONFIG, ids=[field_id(c) for c in SERVE_CONFIG]
)
def test_serve_config_deployment_option_comes_from_its_value(values, where, field, expected):
    assert where(render(values))[field] == expected


@pytest.mark.parametrize(("values", "arg", "expected"), APP_ARGS, ids=[arg for _, arg, _ in APP_ARGS])
def test_app_arg_comes_from_its_value(values, arg, expected):
    assert app_args(render(values))[arg] == expected


@pytest.mark.parametrize(
    ("values", "where", "field", "expected"), WORKER_GROUP, ids=[field_id(c) for c in WORKER_GROUP]
)
def test_ray_cluster_field_comes_from_its_value(values, where, field, expected):
    assert where(render(values))[field] == expected


def test_every_app_arg_the_chart_sets_is_covered_by_the_table():
    covered = {arg for _, arg, _ in APP_ARGS}
    assert set(app_args(render({"model": {"revision": "x"}, "apiKey": {"existingSecret": "k"}}))) <= covered


def test_every_deployment_option_the_chart_sets_is_covered_by_the_table():
    covered = {field for _, _, field, _ in SERVE_CONFIG}
    rendered = deployment(render(AUTOSCALING))
    options = set(rendered) - {"name", "ray_actor_options", "autoscaling_config"}
    assert options | set(rendered["ray_actor_options"]) | set(rendered["autoscaling_config"]) <= covered | {"resources"}
