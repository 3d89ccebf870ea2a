"""Static checks of version pins and the serving image (cheap; no docker needed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "image" / "Dockerfile"
CHART = REPO / "chart"


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def exact_pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([0-9][^\s;,]*)\s*$", requirement)
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


def ray_pin() -> str:
    return exact_pins(pyproject()["project"]["dependencies"])["ray"]


def dockerfile_lines() -> list[str]:
    """One string per instruction: comment lines dropped first (as Docker does), then continuations joined."""
    kept = [line for line in DOCKERFILE.read_text().splitlines() if not line.strip().startswith("#")]
    return [line.strip() for line in "\n".join(kept).replace("\\\n", " ").splitlines() if line.strip()]


def test_the_serving_stack_is_pinned_to_exact_versions():
    project = pyproject()["project"]
    pins = exact_pins(project["dependencies"])
    assert {"ray", "diffusers", "transformers"} <= pins.keys(), pins
    assert exact_pins(project["optional-dependencies"]["neuron"]).get("optimum-neuron", "").startswith("0.4.")


def test_the_base_image_is_the_pinned_neuron_sdk_2_26_pytorch_2_8_inference_image():
    (base,) = [line.split()[1] for line in dockerfile_lines() if line.upper().startswith("FROM ")]
    repository, _, tag = base.partition(":")
    assert repository.endswith("/pytorch-inference-neuronx")
    assert tag and tag != "latest" and "@" not in repository
    assert tag.startswith("2.8.0-") and "sdk2.26" in tag


def test_the_image_runs_as_a_non_root_user():
    users = [line.split()[1] for line in dockerfile_lines() if line.upper().startswith("USER ")]
    assert users, "no USER instruction: the image would run as root"
    assert users[-1] not in ("root", "0", "0:0")


def test_the_image_installs_this_project_with_the_neuron_extra_from_the_neuron_pip_repository():
    text = " ".join(dockerfile_lines())
    assert re.search(r"pip install [^&]*--extra-index-url [^&]*\.\[neuron[,\]]", text)
    assert "pip.repos.neuron.amazonaws.com" in text


def test_the_image_ray_version_equals_the_pyproject_pin():
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", "\n".join(dockerfile_lines()), flags=re.M))
    assert args.get("RAY_VERSION") == ray_pin()


def test_the_image_bakes_in_no_secret_values():
    for line in dockerfile_lines():
        if line.upper().startswith(("ENV ", "ARG ")):
            for name, value in re.findall(r"([A-Za-z_]+)=(\S+)", line):
                if re.search(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY", name, re.I):
                    assert value in ('""', "''"), f"{name} has a value baked into the image"


def test_the_chart_ray_version_equals_the_pyproject_pin():
    found = {}
    for path in sorted(CHART.rglob("*.yaml")):
        for match in re.finditer(r"\b(rayVersion|ray-version)\b\s*:\s*[\"']?([0-9][0-9.]*)", path.read_text()):
            found[f"{path.relative_to(REPO)}:{match.group(1)}"] = match.group(2)
    assert any(key.endswith(":rayVersion") for key in found), "the chart states no rayVersion"
    assert set(found.values()) == {ray_pin()}, found


def run_steps() -> list[str]:
    return [line for line in dockerfile_lines() if line.upper().startswith("RUN ")]


def test_the_runtime_user_reuses_the_dlc_model_server_uid_instead_of_colliding_with_it():
    # The DLC (deep-learning-containers 2.26.1, pytorch/inference/2.8.0/Dockerfile.neuronx) runs
    # `useradd -m model-server` on ubuntu:22.04, which takes UID 1000: `useradd --uid 1000 ray` fails.
    (step,) = [line for line in run_steps() if "useradd" in line or "usermod" in line]
    assert "id -u model-server" in step and "usermod --login ray" in step
    assert 'test "$(id -u ray):$(id -g ray)" = "${APP_UID}:${APP_UID}"' in step
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", "\n".join(dockerfile_lines()), flags=re.M))
    values = (CHART / "values.yaml").read_text()
    assert re.search(rf"^  runAsUser: {args['APP_UID']}$", values, flags=re.M), "chart runAsUser != image APP_UID"


def test_the_image_drops_what_the_dlc_leaves_for_torchserve():
    lines = dockerfile_lines()
    assert "HEALTHCHECK NONE" in lines  # the DLC polls TorchServe on :8080/ping
    assert any(line.startswith("ENV ") and re.search(r"\bTEMP=/tmp\b", line) for line in lines)
    assert lines[-2:] == ["ENTRYPOINT []", 'CMD ["bash"]']


def test_the_image_does_not_pretend_replicas_compile():
    # Replicas load only exported models (no export=True): a compile cache would be dead configuration.
    assert "NEURON_COMPILE_CACHE_URL" not in DOCKERFILE.read_text()


def test_the_build_imports_the_neuron_stack_for_real_and_checks_dependencies():
    # `import optimum.neuron` is lazy (a _LazyModule) and imports neither torch_neuronx nor neuronxcc.
    text = " ".join(run_steps())
    assert "pip check" in text
    assert "from optimum.neuron import NeuronStableDiffusionXLPipeline" in text
    assert re.search(r"import [^\"]*\bneuronxcc\b", text) and re.search(r"import [^\"]*\btorch_neuronx\b", text)


def test_the_documented_neuron_export_compiles_bf16_matmuls():
    # optimum-cli without --auto_cast passes `--auto-cast none` to neuronx-cc: an fp32 model.
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"optimum-cli export neuron [^`\n]+", readme)
    assert commands
    for command in commands:
        assert "--auto_cast matmul --auto_cast_type bf16" in command, command
