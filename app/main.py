"""Serve application builder: ``app.main:build_app`` (the import path the chart puts in serveConfigV2).

``build_app`` runs in the Serve controller when the application is deployed. It validates the
arguments there, so a bad value fails the deploy with a message naming the field (visible in
``serve status`` and the RayService's status) instead of starting replicas that crash in a loop.

Importable without torch or diffusers: the model stack is imported inside the replica.
"""

from __future__ import annotations

from ray.serve import Application

from app.config import AppArgs, parse_app_args


def default_deployment_options(args: AppArgs) -> dict:
    """Resources a replica needs for ``args.backend``; serveConfigV2 ``deployments`` may override them."""
    if args.backend == "neuron":
        return {"ray_actor_options": {"num_cpus": 1, "resources": {"neuron_cores": args.neuron_cores_per_replica}}}
    if args.backend == "cuda":
        return {"ray_actor_options": {"num_cpus": 1, "num_gpus": 1}}
    return {"ray_actor_options": {"num_cpus": 1}}


def build_app(args: dict | None = None) -> Application:
    """Validate ``args`` (raises ``InvalidAppArgs`` naming the field) and bind the ``SDXLService`` deployment."""
    app_args = parse_app_args(args)
    from app.service import SDXLService

    # The replica receives plain JSON-able args and validates them again with the same model.
    return SDXLService.options(**default_deployment_options(app_args)).bind(app_args.model_dump(mode="json"))
