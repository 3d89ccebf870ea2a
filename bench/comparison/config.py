"""What a comparison run deploys: our app as the chart's local scenario renders it, and the seed design
configured to match it (same model, steps, guidance, size, prompts, replicas and ``ray_actor_options``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: The chart's CPU scenario that the benchmark deploys unless --values names another.
LOCAL_SCENARIO = REPO / "chart" / "ci" / "cpu-local-values.yaml"

PROMPTS = (
    "an astronaut is dancing on green grass, sunlit",
    "a lighthouse on a cliff at dawn, oil painting",
    "a bowl of ramen, studio photo, shallow depth of field",
    "a red fox in fresh snow, telephoto",
    "isometric city block at night, neon signs",
    "a watercolor of a sailing boat in a storm",
    "macro shot of a dew drop on a leaf",
    "a cozy library with a fireplace, warm light",
)

#: Designs measured, in table order. "ours" is the chart's local scenario as rendered; the variant differs
#: only in batch_wait_timeout_s=0, to show what the batch wait costs an unloaded service.
DESIGNS = ("seed", "ours", "ours-nowait")
SEED_ROUTE = "/seed"
NOWAIT_ROUTE = "/serve-nowait"

GOAL_P50_RATIO = 0.85  # ours / seed at concurrency 1, at most
GOAL_THROUGHPUT_RATIO = 1.8  # ours / seed at concurrency 16, at least


class ScenarioError(SystemExit):
    """The chart scenario cannot be measured: the run stops and says why (it never measures a stand-in)."""


def application_from_chart(values_file: Path) -> dict:
    """Render the chart with ``values_file`` and return our app's serveConfigV2 application entry."""
    import yaml

    from bench import chart_render

    _, objects = chart_render.render_manifests(yaml.safe_load(values_file.read_text()) or {})
    for doc in objects:
        if doc.get("kind") != "RayService":
            continue
        for application in chart_render.serve_config(doc).get("applications", []):
            if application.get("import_path") == "app.main:build_app":
                return application
    raise ScenarioError(f"the chart rendered with {values_file} has no application with import_path app.main:build_app")


@dataclass(frozen=True)
class Scenario:
    """Our application as the chart renders it, and the facts both designs share."""

    application: dict
    source: str

    @classmethod
    def from_values(cls, values: str | None) -> Scenario:
        values_file = Path(values) if values else LOCAL_SCENARIO
        if not values_file.is_absolute():
            values_file = REPO / values_file
        if not values_file.is_file():
            raise ScenarioError(f"--values {values_file}: no such file")
        shown = values_file.relative_to(REPO) if values_file.is_relative_to(REPO) else values_file
        import helm_python
        import yaml

        try:
            application = application_from_chart(values_file)
        except (helm_python.HelmValuesError, helm_python.HelmRenderError, yaml.YAMLError) as error:
            # Helm's schema or a validate.yaml rule refused the values, or the file is not YAML.
            raise ScenarioError(f"the chart does not render with {shown}: {type(error).__name__}: {error}") from None
        application = dict(application)
        application["name"] = application.get("name") or "sdxl"
        return cls(application, f"serveConfigV2 rendered from chart/ with {shown} (helm_python)")

    @property
    def args(self):
        from app.config import parse_app_args

        return parse_app_args(self.application.get("args"))

    @property
    def route(self) -> str:
        return (self.application.get("route_prefix") or "/serve").rstrip("/")

    @property
    def deployment_options(self) -> dict:
        for deployment in self.application.get("deployments", []) or []:
            if deployment.get("name") == "SDXLService":
                return deployment
        return {}

    @property
    def actor_options(self) -> dict:
        return dict(self.deployment_options.get("ray_actor_options") or {"num_cpus": 1})

    @property
    def replicas(self) -> int:
        replicas = self.deployment_options.get("num_replicas", 1)
        if not isinstance(replicas, int):  # "auto" or autoscaling: pin both designs to the minimum
            replicas = (self.deployment_options.get("autoscaling_config") or {}).get("min_replicas", 1) or 1
        return replicas

    def ray_init_options(self, copies: int) -> dict:
        """``ray.init`` options for a private session that holds ``copies`` deployments of this scenario.

        Enough CPUs for every copy's replicas (at least the machine's), and the custom resources their
        replicas ask for (a scenario may request ``neuron_cores`` to model a node's capacity).
        """
        import math
        import os

        actor = self.actor_options
        needed_cpus = copies * self.replicas * float(actor.get("num_cpus", 1) or 0)
        custom = {
            name: copies * self.replicas * float(amount) for name, amount in (actor.get("resources") or {}).items()
        }
        return {
            "address": "local",
            "num_cpus": max(os.cpu_count() or 2, math.ceil(needed_cpus)),
            "resources": custom or None,
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }

    @property
    def threads(self) -> int:
        """torch threads of one replica (its CPU reservation): the bare pipeline runs with as many."""
        return max(1, int(self.actor_options.get("num_cpus", 1) or 1))

    def applications(self) -> list[dict]:
        """serveConfigV2 applications of the three designs: ours, the seed's, ours without batch waits."""
        args = self.args
        width, height = args.default_size
        seed = {
            "name": "seed",
            "import_path": "bench.seed_design:build_seed",
            "route_prefix": SEED_ROUTE,
            "args": {
                "model_id": args.model_id,
                "backend": args.backend,
                "steps": args.default_steps,
                "guidance_scale": args.default_guidance_scale,
                "width": width,
                "height": height,
            },
            "deployments": [
                {"name": "SeedModel", "num_replicas": self.replicas, "ray_actor_options": self.actor_options},
                # Only the model replicas hold logical CPUs, as our app's single deployment does.
                {"name": "SeedIngress", "ray_actor_options": {"num_cpus": 0}},
            ],
        }
        ours = {k: v for k, v in self.application.items() if k not in ("host", "port")}
        nowait = json.loads(json.dumps(ours))
        nowait.update(name="ours-nowait", route_prefix=NOWAIT_ROUTE)
        nowait["args"] = {**nowait.get("args", {}), "batch_wait_timeout_s": 0.0}
        return [ours, seed, nowait]

    def routes(self) -> dict[str, str]:
        return {"seed": SEED_ROUTE, "ours": self.route, "ours-nowait": NOWAIT_ROUTE}


@dataclass(frozen=True)
class Plan:
    """How much to measure: ``quick`` (~1-2 minutes) or ``full`` (~4-8 minutes on 2 cores)."""

    mode: str
    levels: tuple[int, ...]
    rounds: int

    @classmethod
    def create(cls, *, quick: bool, levels: str, rounds: int | None) -> Plan:
        return cls(
            "quick" if quick else "full", tuple(int(x) for x in levels.split(",")), rounds or (1 if quick else 3)
        )

    def requests_at(self, level: int) -> int:
        per_level = {1: 12, 4: 24, 16: 48} if self.mode == "quick" else {1: 30, 4: 60, 16: 128}
        return per_level.get(level, 4 * level)

    @property
    def bare_repeats(self) -> int:
        return 6 if self.mode == "quick" else 16

    @property
    def encode_repeats(self) -> int:
        return 3 if self.mode == "quick" else 7
