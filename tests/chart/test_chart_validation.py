"""Values the chart refuses, and how it says so: values.schema.json bounds every field (one test per
bound, generated from the schema itself) and templates/validate.yaml rejects combinations, naming
the value to change."""

from __future__ import annotations

import json

import pytest

from tests.chart.chartlib import CHART_DIR, chart, render, render_error

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def set_path(path: tuple[str, ...], value) -> dict:
    values: dict = {}
    cursor = values
    for key in path[:-1]:
        cursor = cursor.setdefault(key, {})
    cursor[path[-1]] = value
    return values


def resolved(node: dict) -> dict:
    """``node`` with its ``$ref`` (into the schema's ``definitions``) merged in, as a validator sees it."""
    while "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    return node


def walk(schema: dict, path: tuple[str, ...] = ()):
    """(path, schema) of every property reachable through objects (not inside array items)."""
    schema = resolved(schema)
    yield path, schema
    for key, child in schema.get("properties", {}).items():
        yield from walk(child, (*path, key))


def violations():
    """One value per bound that the schema must reject, with a readable test id."""
    cases = []
    for path, node in walk(SCHEMA):
        where = ".".join(path) or "<root>"
        kind = node.get("type")
        if kind == "object" and node.get("additionalProperties") is False:
            cases.append(pytest.param(path + ("notAValue",), 1, id=f"{where}: unknown key"))
        if not path:
            continue
        if kind in ("integer", "number"):
            if "exclusiveMinimum" in node:
                cases.append(pytest.param(path, node["exclusiveMinimum"], id=f"{where} = exclusiveMinimum"))
            else:
                cases.append(pytest.param(path, node["minimum"] - 1, id=f"{where} < minimum"))
            cases.append(pytest.param(path, node["maximum"] + 1, id=f"{where} > maximum"))
            cases.append(pytest.param(path, "7", id=f"{where}: a string"))
            if kind == "integer":
                cases.append(pytest.param(path, node.get("minimum", 0) + 0.5, id=f"{where}: not an integer"))
        elif kind == "string":
            cases.append(pytest.param(path, 7, id=f"{where}: a number"))
            if "enum" in node:
                cases.append(pytest.param(path, "not-an-option", id=f"{where}: outside enum"))
            if "pattern" in node:
                cases.append(pytest.param(path, "Not Valid!", id=f"{where}: pattern"))
            if "maxLength" in node:
                cases.append(pytest.param(path, "a" * (node["maxLength"] + 1), id=f"{where}: too long"))
            if node.get("minLength"):
                cases.append(pytest.param(path, "", id=f"{where}: empty"))
        elif kind == "boolean":
            cases.append(pytest.param(path, "yes", id=f"{where}: not a boolean"))
        elif kind == "array":
            cases.append(pytest.param(path, "not-a-list", id=f"{where}: not a list"))
            if node.get("minItems"):
                cases.append(pytest.param(path, [], id=f"{where}: empty list"))
        elif kind == "object" and isinstance(node.get("additionalProperties"), dict):
            cases.append(pytest.param(path + ("example.com/key",), 7, id=f"{where}: non-string value"))
    return cases


@pytest.mark.parametrize(("path", "value"), violations())
def test_schema_rejects_each_out_of_bound_value_naming_its_path(path, value):
    message = render_error(set_path(path, value))
    # Helm reports a JSON pointer: "/" inside a key is written "~1".
    pointer = "".join("/" + key.replace("/", "~1") for key in path)
    if path[-1] == "notAValue":
        parent = pointer.removesuffix("/notAValue")
        assert f"at '{parent}': additional properties 'notAValue' not allowed" in message, message
    else:
        assert f"at '{pointer}'" in message, message


def test_every_schema_field_is_typed_and_described_and_every_object_is_closed():
    problems = []
    for path, node in walk(SCHEMA):
        where = ".".join(path) or "<root>"
        if "type" not in node or not node.get("description"):
            problems.append(f"{where}: missing type or description")
        if node.get("type") == "object" and "additionalProperties" not in node:
            problems.append(f"{where}: additionalProperties not set")
        if node.get("type") in ("integer", "number") and not (
            "maximum" in node and {"minimum", "exclusiveMinimum"} & node.keys()
        ):
            problems.append(f"{where}: unbounded number")
        if node.get("type") == "string" and not ({"enum", "pattern", "maxLength"} & node.keys()):
            problems.append(f"{where}: unbounded string")
        if node.get("type") == "array" and "maxItems" not in node:
            problems.append(f"{where}: unbounded list")
    assert not problems


def test_chart_defaults_satisfy_the_schema():
    chart().validate_schema({})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"imageSizes": ["1024x1024", "1024x1024"]}, "items at 0 and 1 are equal", id="duplicate image size"
        ),
        pytest.param({"huggingFaceToken": {"existingSecret": "Bad_Name"}}, "existingSecret", id="secret name"),
    ],
)
def test_schema_rejects_bad_model_lists_and_secret_names(values, message):
    assert message in render_error({"model": values})


def test_schema_accepts_unbounded_or_positive_queues_but_not_zero_which_serve_rejects():
    assert "at '/serve/maxQueuedRequests'" in render_error({"serve": {"maxQueuedRequests": 0}})
    for queued in (-1, 1):
        assert render({"serve": {"maxQueuedRequests": queued}}).sdxl_deployment["max_queued_requests"] == queued


def test_schema_accepts_only_al2023_ami_aliases():
    # The EC2NodeClass enlarges /dev/xvda, which is the data volume only on AL2023.
    assert "at '/karpenter/amiAlias'" in render_error({"karpenter": {"amiAlias": "bottlerocket@latest"}})
    karpenter = {"create": True, "clusterName": "c", "nodeRole": "r", "amiAlias": "al2023@v20250101"}
    node_class = render({"karpenter": karpenter}).one("EC2NodeClass")
    assert node_class["spec"]["amiSelectorTerms"] == [{"alias": "al2023@v20250101"}]


def test_schema_rejects_an_image_digest_that_is_not_sha256():
    assert "at '/image/digest'" in render_error({"image": {"digest": "sha256:abc"}})


def test_schema_rejects_a_toleration_with_an_unknown_operator():
    assert "operator" in render_error({"workers": {"tolerations": [{"key": "x", "operator": "Maybe"}]}})


def test_schema_rejects_an_extra_env_entry_without_value_or_valuefrom():
    assert "extraEnv" in render_error({"extraEnv": [{"name": "ONLY_A_NAME"}]})


# --- validate.yaml: combinations -------------------------------------------------------------

FAIL_RULES = [
    pytest.param(
        {"ui": {"enabled": True, "shareApiKey": True}},
        ["ui.shareApiKey=true", "apiKey.existingSecret is empty"],
        id="sharing an API key the API does not have",
    ),
    pytest.param(
        {"workers": {"instanceType": "inf2.4xlarge"}},
        ['workers.instanceType "inf2.4xlarge" is not in', "inf2.48xlarge", "trn1.32xlarge"],
        id="unknown instance type",
    ),
    pytest.param(
        {"neuronCoresPerReplica": 5},
        ["neuronCoresPerReplica=5 does not divide the 24 NeuronCores of inf2.48xlarge", "divisor of 24"],
        id="cores per replica not dividing the node",
    ),
    pytest.param(
        {"neuronCoresPerReplica": 32},
        ["neuronCoresPerReplica=32 does not divide the 24 NeuronCores"],
        id="cores per replica larger than the node",
    ),
    pytest.param(
        {"replicas": 13},
        [
            "replicas=13 does not fit on workers.maxNodes=1",
            "12 replicas each",
            "workers.maxNodes to at least 2",
            "replicas to at most 12",
            "on a running release a new workers.maxNodes reaches the live RayCluster "
            "only through the kubectl patch NOTES.txt prints",
        ],
        id="replicas beyond max nodes",
    ),
    pytest.param(
        {"autoscaling": {"enabled": True, "maxReplicas": 30}, "workers": {"maxNodes": 2}},
        [
            "autoscaling.maxReplicas=30 does not fit on workers.maxNodes=2",
            "at least 3",
            "at most 24",
            "kubectl patch NOTES.txt prints",
        ],
        id="autoscaling max beyond max nodes",
    ),
    pytest.param(
        {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 4}},
        ["autoscaling.minReplicas=5 exceeds autoscaling.maxReplicas=4"],
        id="autoscaling min above max",
    ),
    pytest.param(
        {"workers": {"minNodes": 3, "maxNodes": 2}, "replicas": 12},
        ["workers.minNodes=3 exceeds workers.maxNodes=2"],
        id="min nodes above max nodes",
    ),
    pytest.param(
        {
            "workers": {"instanceType": "inf2.xlarge", "headroom": {"cpu": 4}},
            "replicas": 1,
            "serve": {"replicaCpus": 1, "replicaMemoryMiB": 1024},
        },
        ["workers.headroom.cpu=4 leaves no vCPU of the 4 on inf2.xlarge"],
        id="cpu headroom eats the node",
    ),
    pytest.param(
        {
            "workers": {"instanceType": "inf2.xlarge", "headroom": {"memoryPercent": 50, "memoryGiB": 8}},
            "replicas": 1,
            "serve": {"replicaCpus": 1},
        },
        ["workers.headroom leaves no memory of the 16 GiB on inf2.xlarge"],
        id="memory headroom eats the node",
    ),
    pytest.param(
        {"serve": {"replicaCpus": 16}},
        ["12 replicas x serve.replicaCpus=16 need 192 vCPU but one inf2.48xlarge worker has 190", "at most 15"],
        id="replica CPUs beyond the node",
    ),
    pytest.param(
        {"serve": {"replicaMemoryMiB": 65536}},
        ["serve.replicaMemoryMiB=65536", "lower serve.replicaMemoryMiB to at most"],
        id="replica memory beyond the node",
    ),
    pytest.param(
        {"ui": {"enabled": True, "numCpus": 8}, "serve": {"replicaCpus": 15.5}},
        ["ui.numCpus=8 does not fit next to 12 replicas"],
        id="ui CPUs beyond the node",
    ),
    pytest.param(
        {"model": {"batchSize": 4}},
        ["serve.maxOngoingRequests=2 is below model.batchSize=4", "at least 4"],
        id="batch larger than ongoing requests",
    ),
    pytest.param(
        {"generation": {"defaultSteps": 60}},
        ["generation.defaultSteps=60 exceeds generation.maxSteps=50"],
        id="default steps above max",
    ),
    pytest.param(
        {"generation": {"defaultGuidanceScale": 25}},
        ["generation.defaultGuidanceScale=25 exceeds generation.maxGuidanceScale=20"],
        id="default guidance above max",
    ),
    pytest.param(
        {"model": {"imageSizes": ["1024x1024", "768x768"]}},
        ["model.backend=neuron supports exactly one image size", "lists 2"],
        id="several sizes on neuron",
    ),
    pytest.param(
        {"ingress": {"className": ""}},
        ["ingress.enabled=true needs ingress.className"],
        id="ingress without class",
    ),
    pytest.param(
        {"ingress": {"tls": {"enabled": True, "secretName": "tls"}}},
        ["ingress.tls.enabled=true needs ingress.host"],
        id="tls without host",
    ),
    pytest.param(
        {"ingress": {"host": "sdxl.example.com", "tls": {"enabled": True}}},
        [
            "ingress.tls.enabled=true with ingress.className=nginx needs ingress.tls.secretName",
            "only ingress.className=alb does without one",
        ],
        id="tls without secret on nginx",
    ),
    pytest.param(
        {
            "ingress": {"host": "sdxl.example.com"},
            "dashboard": {"ingress": {"enabled": True, "host": "sdxl.example.com"}},
        },
        ['dashboard.ingress.host="sdxl.example.com" equals ingress.host', "give the dashboard its own host name"],
        id="dashboard on the API host",
    ),
    pytest.param(
        {"dashboard": {"ingress": {"enabled": True}}},
        ["dashboard.ingress.enabled=true needs dashboard.ingress.host"],
        id="dashboard ingress without host",
    ),
    pytest.param(
        {
            "dashboard": {"ingress": {"enabled": True, "host": "ray.example.com"}},
            "ingress": {"enabled": False, "className": ""},
        },
        ["dashboard.ingress.enabled=true needs ingress.className"],
        id="dashboard ingress without class",
    ),
    pytest.param(
        {"karpenter": {"create": True, "clusterName": "c"}},
        ["karpenter.create=true needs karpenter.clusterName", "karpenter.nodeRole"],
        id="karpenter without node role",
    ),
    pytest.param(
        {"karpenter": {"create": True, "clusterName": "c", "nodeRole": "r"}, "workers": {"nodePool": ""}},
        ["karpenter.create=true names the NodePool after workers.nodePool"],
        id="karpenter without nodepool name",
    ),
    pytest.param(
        {"monitoring": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}},
        ["enable only one"],
        id="both monitors",
    ),
    pytest.param(
        {"namespace": {"create": True}},
        ["namespace.create=true needs namespace.name"],
        id="namespace without name",
    ),
    pytest.param(
        # The tests install into namespace "sdxl", where Helm keeps the release.
        {"namespace": {"create": True, "name": "sdxl"}},
        [
            'namespace.create=true with namespace.name="sdxl", the release namespace',
            "drop namespace.create (helm install -n sdxl --create-namespace)",
            "helm install sdxl ./chart -n default --set namespace.create=true,namespace.name=sdxl",
        ],
        id="created namespace is the release namespace",
    ),
    pytest.param(
        {"model": {"imageSizes": ["1020x1024"]}},
        ['model.imageSizes entry "1020x1024": each side must be a multiple of 8 between 64 and 2048'],
        id="image size not a multiple of 8",
    ),
    pytest.param(
        {"model": {"backend": "cpu", "imageSizes": ["512x512", "56x512"]}},
        ['model.imageSizes entry "56x512"'],
        id="image size below 64",
    ),
    pytest.param(
        {"model": {"imageSizes": ["1024x2056"]}},
        ['model.imageSizes entry "1024x2056"'],
        id="image size above 2048",
    ),
    pytest.param(
        {
            "autoscaling": {"enabled": True, "maxReplicas": 48},
            "workers": {"maxNodes": 4},
            "rayCluster": {"enableInTreeAutoscaling": False},
        },
        [
            "autoscaling.maxReplicas=48 needs more than the 1 worker node(s) the cluster starts with (12 replicas)",
            "set rayCluster.enableInTreeAutoscaling=true or autoscaling.maxReplicas to at most 12",
        ],
        id="serve autoscaling beyond the initial nodes without the ray autoscaler",
    ),
    pytest.param(
        {"networkPolicy": {"enabled": True}, "monitoring": {"podMonitor": {"enabled": True}}},
        [
            "networkPolicy.enabled=true admits the metrics port 8080 "
            "only from networkPolicy.metricsFrom, which is empty",
            "list your Prometheus there",
        ],
        id="pod monitor blocked by the network policy",
    ),
    pytest.param(
        {"networkPolicy": {"enabled": True}, "monitoring": {"serviceMonitor": {"enabled": True}}},
        ["networkPolicy.metricsFrom, which is empty"],
        id="service monitor blocked by the network policy",
    ),
    pytest.param(
        {"model": {"download": False}},
        [
            "model.download=false loads only what the image carries, "
            'but model.id="aws-neuron/stable-diffusion-xl-base-1-0-1024x1024" is a Hub id',
            "/models/sdxl",
            "or set model.download=true",
        ],
        id="offline replicas with a hub id",
    ),
    pytest.param(
        {"generation": {"maxSteps": 1, "defaultSteps": 1}},
        ["helmTest.steps=2 exceeds generation.maxSteps=1, so helm test would get a 400"],
        id="helm test steps above max steps",
    ),
    pytest.param(
        {"workers": {"nodeSelector": {"node.kubernetes.io/instance-type": "inf2.24xlarge"}}},
        [
            "workers.nodeSelector sets node.kubernetes.io/instance-type",
            "use workers.instanceType and workers.nodePool instead",
        ],
        id="worker selector overriding the instance type",
    ),
    pytest.param(
        {"workers": {"nodeSelector": {"karpenter.sh/nodepool": "other"}}},
        ["workers.nodeSelector sets karpenter.sh/nodepool"],
        id="worker selector overriding the nodepool",
    ),
    pytest.param(
        {"head": {"nodeSelector": {"karpenter.sh/nodepool": "other"}}},
        ["head.nodeSelector sets karpenter.sh/nodepool", "use head.nodePool instead"],
        id="head selector overriding the nodepool",
    ),
    pytest.param(
        {"fullnameOverride": "9sdxl"},
        ['the RayService name "9sdxl"', "is not a DNS-1035 label", "starting with a letter; set fullnameOverride"],
        id="name starting with a digit",
    ),
    pytest.param(
        {
            "karpenter": {"create": True, "clusterName": "c", "nodeRole": "r"},
            "replicas": 24,
            "workers": {"maxNodes": 2},
        },
        [
            "karpenter.surgeNodes=1 leaves the NodePool no room for the 2 node(s) the second Ray cluster",
            "raise karpenter.surgeNodes to at least 2",
        ],
        id="karpenter surge below the second cluster",
    ),
    pytest.param(
        {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 12, "initialReplicas": 1}},
        ["autoscaling.initialReplicas=1 is outside autoscaling.minReplicas..maxReplicas (2..12), which Serve refuses"],
        id="initial replicas below the minimum",
    ),
    pytest.param(
        {"dashboard": {"ingress": {"enabled": True, "host": "ray.example.com"}}, "networkPolicy": {"enabled": True}},
        ["dashboard.ingress.enabled=true with networkPolicy.enabled=true", "502/504", "networkPolicy.dashboardFrom"],
        id="dashboard ingress behind a policy that shuts its controller out",
    ),
    pytest.param(
        {"head": {"nodeSelector": {"kubernetes.io/arch": "arm64"}}},
        ["head.nodeSelector sets kubernetes.io/arch=arm64", "amd64 only"],
        id="head on Graviton",
    ),
    pytest.param(
        {"rayCluster": {"faultTolerance": {"mode": "redis"}}},
        ["rayCluster.faultTolerance.mode=redis needs rayCluster.faultTolerance.redis.address"],
        id="redis fault tolerance without a Redis",
    ),
    pytest.param(
        {
            "rayCluster": {"faultTolerance": {"mode": "rocksdb"}},
            "extraEnv": [{"name": "RAY_gcs_storage", "value": "x"}],
        },
        ["extraEnv sets RAY_gcs_storage, which KubeRay refuses next to gcsFaultToleranceOptions"],
        id="fault tolerance set twice",
    ),
]


@pytest.mark.parametrize(("values", "fragments"), FAIL_RULES)
def test_validate_rule_refuses_the_combination_and_says_what_to_change(values, fragments):
    message = render_error(values)
    for fragment in fragments:
        assert fragment in message


def test_every_fail_rule_in_validate_yaml_has_a_test():
    import re

    source = (CHART_DIR / "templates" / "validate.yaml").read_text()
    # The longest literal piece of each rule's message (between printf placeholders).
    openings = [
        max(re.split(r"%[a-z]", text), key=len)
        for text in re.findall(r'fail (?:\(printf )?"((?:[^"\\]|\\.)*)"', source)
    ]
    assert len(openings) == source.count("fail ")
    messages = [render_error(case.values[0]) for case in FAIL_RULES]
    untested = [
        opening for opening in openings if not any(opening.replace('\\"', '"') in message for message in messages)
    ]
    assert not untested


def test_valid_edges_of_the_new_rules_render():
    # Each rule refuses only what it names: these neighbours of the refused values are fine.
    assert render({"model": {"backend": "cpu", "imageSizes": ["64x2048", "1016x768"]}}).application()["args"][
        "image_sizes"
    ] == ["64x2048", "1016x768"]
    assert (
        render({"model": {"download": False, "id": "/models/sdxl"}}).application()["args"]["model_id"] == "/models/sdxl"
    )
    assert render({"model": {"download": False, "id": "embedded"}}).application()["args"]["model_id"] == "embedded"
    # Serve autoscaling within the nodes the cluster starts with needs no Ray autoscaler.
    fixed = render(
        {"autoscaling": {"enabled": True, "maxReplicas": 12}, "rayCluster": {"enableInTreeAutoscaling": False}}
    )
    assert fixed.rayservice["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is False
    # The head's instance type is not derived by the chart, so pinning it is allowed.
    head = render({"head": {"nodeSelector": {"node.kubernetes.io/instance-type": "m7i.2xlarge"}}})
    assert head.head_group["template"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"] == "m7i.2xlarge"
    # With an ALB, TLS needs no Secret.
    alb = render({"ingress": {"className": "alb", "host": "sdxl.example.com", "tls": {"enabled": True}}})
    assert alb.one("Ingress")["spec"]["tls"] == [{"hosts": ["sdxl.example.com"]}]


def test_valid_edges_of_the_issue_8_rules_render():
    at_max = render({"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 12, "initialReplicas": 12}})
    assert at_max.sdxl_deployment["autoscaling_config"]["initial_replicas"] == 12
    assert "initial_replicas" not in render({"autoscaling": {"enabled": True}}).sdxl_deployment["autoscaling_config"]
    dashboard = {"enabled": True, "host": "ray.example.com"}
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    rendered = render({"dashboard": {"ingress": dashboard}, "networkPolicy": {"enabled": True, "dashboardFrom": peers}})
    assert "NetworkPolicy" in rendered.kinds()
    amd64 = render({"head": {"nodeSelector": {"kubernetes.io/arch": "amd64"}}})
    assert amd64.head_group["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] == "amd64"


def test_the_largest_valid_combination_renders():
    # Boundaries are inclusive: exactly a full node of replicas, exactly maxNodes of them.
    rendered = render({"replicas": 24, "workers": {"maxNodes": 2}, "serve": {"replicaCpus": 15}})
    assert rendered.sdxl_deployment["num_replicas"] == 24
    assert rendered.worker_group["replicas"] == 2


@pytest.mark.parametrize("size", ["64x64", "2048x2048", "1016x768", "1020x1024", "56x64", "64x2056", "1024x9999"])
def test_the_chart_accepts_exactly_the_image_sizes_the_app_accepts(size):
    from app.config import parse_size

    try:
        parse_size(size)
        app_accepts = True
    except ValueError:
        app_accepts = False
    values = {"model": {"backend": "cpu", "imageSizes": [size]}}
    if app_accepts:
        assert render(values).application()["args"]["image_sizes"] == [size]
    else:
        assert f'model.imageSizes entry "{size}"' in render_error(values)
