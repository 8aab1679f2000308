"""Starting the model deployments on Ray Serve, and connecting the app to them.

`python -m editor serve` (`serve_forever`) plans the models from the settings, as the app would,
and runs one Serve application per kind that has a model to run (`APP_NAME-segmenter`, ...), each
with the replicas, resources and queue bounds of `serving.KIND`. Without `serving.ray_address` it
starts a local Ray instance that lives as long as the command; several app processes
(`python app.py --set serving.backend=ray`) then connect to it (`remote_engine`) and share the
deployments.
"""
from __future__ import annotations

import math
import os
import socket
import sys
import threading
from typing import Any

from editor.core.config import Config, DeploymentConfig
from editor.core.errors import BackendUnreachable, ConfigError
from editor.models.base import KINDS, Kind

# Nothing phones home; and a page joining by address must send the cluster's token (~/.ray/auth_token, or
# RAY_AUTH_TOKEN), as Ray only reads it unasked for `address="auto"` (RAY_AUTH_MODE=disabled for a cluster without).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
MIN_OBJECT_STORE = 80 * 1024**2  # Ray refuses a smaller object store


def _ray_environment() -> None:
    for name, value in RAY_ENV.items():
        os.environ.setdefault(name, value)


def app_name(config: Config, kind: Kind) -> str:
    return f"{config.serving.app_name}-{kind}"


def deployment_options(config: Config, kind: Kind) -> dict[str, Any]:
    """Serve's options for `kind`'s deployment, from `serving.KIND`."""
    settings: DeploymentConfig = getattr(config.serving, kind)
    options: dict[str, Any] = {
        "name": kind,
        "ray_actor_options": {"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus},
        "max_ongoing_requests": settings.max_ongoing_requests,
        "max_queued_requests": settings.max_queued_requests,
        "health_check_period_s": 2,
        "graceful_shutdown_timeout_s": 5,
    }
    scaling = settings.autoscaling
    if scaling.enabled:
        options["autoscaling_config"] = {"min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas,
                                         "target_ongoing_requests": scaling.target_ongoing_requests}
    else:
        options["num_replicas"] = settings.num_replicas
    return options


def served_kinds(config: Config) -> list[Kind]:
    """The kinds with a model of their own to run (what `build_engine` would build in the app)."""
    from editor.build import plan_backends, served

    plan = plan_backends(config)
    return [kind for kind in KINDS if kind == "segmenter" or served(plan, kind)]


def start_ray(config: Config, object_store_bytes: int | None = None) -> None:
    """Connect to `serving.ray_address`, or start a local Ray instance with enough logical CPUs
    for the replicas asked for (Ray's CPUs are a reservation, not a limit on threads)."""
    _ray_environment()  # before Ray is imported: it reads RAY_AUTH_MODE once
    import ray

    if config.serving.ray_address:
        _connect(config.serving.ray_address)
        return
    wanted = sum(_replicas(config, kind) * getattr(config.serving, kind).num_cpus for kind in KINDS)
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(wanted)), include_dashboard=False, log_to_driver=False,
             object_store_memory=None if object_store_bytes is None else max(object_store_bytes, MIN_OBJECT_STORE))


def _replicas(config: Config, kind: Kind) -> int:
    settings: DeploymentConfig = getattr(config.serving, kind)
    return settings.autoscaling.max_replicas if settings.autoscaling.enabled else settings.num_replicas


def application(config: Config, kind: Kind) -> Any:
    """`kind`'s Serve application: its replica class with the options of `serving.KIND`, bound to the settings."""
    from ray import serve

    from editor.serving.replicas import REPLICAS

    return serve.deployment(REPLICAS[kind]).options(**deployment_options(config, kind)).bind(config)


def deploy(config: Config) -> list[Kind]:
    """Run (or update) one Serve application per served kind; returns once every replica is ready."""
    from ray import serve

    serve.start(proxy_location="Disabled")  # the app calls the handles: no HTTP proxy is needed
    kinds = served_kinds(config)
    for kind in kinds:
        serve.run(application(config, kind), name=app_name(config, kind), route_prefix=None)
    for kind in KINDS:  # a kind the settings no longer serve must not answer the apps
        if kind not in kinds and app_name(config, kind) in serve.status().applications:
            serve.delete(app_name(config, kind))
    return kinds


def serve_forever(config: Config, stop: threading.Event | None = None) -> int:
    """`python -m editor serve`: start Ray (or join the cluster), deploy, say `ready:`, wait for Ctrl+C."""
    start_ray(config)
    import ray

    try:
        kinds = deploy(config)
        address = config.serving.ray_address or ray.get_runtime_context().gcs_address
        replicas = ", ".join(f"{kind} x{_replicas(config, kind)}" for kind in kinds)
        print(f"ready: {replicas} on {'the cluster' if config.serving.ray_address else 'a local Ray instance'}; "
              f"pages: python app.py --set serving.backend=ray --set serving.ray_address={address}",
              file=sys.stderr, flush=True)
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        if not config.serving.ray_address:
            ray.shutdown()  # the local instance ends with the command; a cluster's deployments stay
    return 0


def _connect(address: str) -> None:
    """Join the Ray cluster at `address` ("auto": the one this machine runs), or say in one line that it is not there."""
    if address != "auto":
        _probe(address)  # before ray.init, which waits minutes on an address nobody answers
    _ray_environment()
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise _unreachable(address, first[:120]) from None  # its first sentence: Ray's next ones name Ray's flags


def _probe(address: str, timeout_s: float = 3) -> None:
    """Does anything answer at HOST:PORT (or ray://HOST:PORT)? Ray's own ports when none is given."""
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rstrip("/").rpartition(":")
    if not host or port.endswith("]"):  # no port: "HOST", "[::1]"
        host, port = f"{host}:{port}" if host else port, "10001" if client else "6379"
    if not port.isdigit():
        raise ConfigError(f"serving.ray_address {address!r} is not HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise _unreachable(address, exc.strerror or type(exc).__name__) from None


def _unreachable(address: str, reason: str) -> BackendUnreachable:
    where = address if address != "auto" else "this machine"
    return BackendUnreachable(f"cannot reach a Ray cluster on {where} ({reason})")


def remote_engine(config: Config) -> Any:
    """An engine whose models are the deployments: the engine, sessions and page cannot tell."""
    _connect(config.serving.ray_address or "auto")  # first: Ray reads its environment when imported
    from ray import serve

    from editor.build import assemble_engine
    from editor.engine.priority import SelectionFirst
    from editor.serving.remote import CLIENTS, Deployment

    running = serve.status().applications
    if app_name(config, "segmenter") not in running:
        raise BackendUnreachable(f"no {app_name(config, 'segmenter')} deployment on the Ray cluster "
                                 "(is `python -m editor serve` running with the same settings?)")
    models: dict[str, Any] = {}
    for kind in KINDS:
        if app_name(config, kind) in running:
            handle = serve.get_app_handle(app_name(config, kind))
            models[kind] = CLIENTS[kind](Deployment(kind, handle, config.serving.request_timeout_s))
    backends = models["segmenter"].deployment.info().backends
    # Selections and generations run in other processes: nothing here to pause for a click.
    return assemble_engine(config, backends, models["segmenter"], inpainter=models.get("inpainter"),
                           detector=models.get("detector"), eraser=models.get("eraser"),
                           upscaler=models.get("upscaler"), priority=SelectionFirst(enabled=False))


# Application builders for a Serve config file (KubeRay's serveConfigV2, `serve deploy`): the import
# path `editor.serving.cluster:segmenter_app` with `args: {config: PATH, set: [KEY=VALUE, ...]}`. The
# deployment options the config file gives for a deployment (named after its kind) override these.
def _built(kind: Kind, args: dict[str, Any]) -> Any:
    from editor.core.config import load_config

    return application(load_config(args.get("config") or None, list(args.get("set") or [])), kind)


def segmenter_app(args: dict[str, Any]) -> Any:
    return _built("segmenter", args)


def eraser_app(args: dict[str, Any]) -> Any:
    return _built("eraser", args)


def inpainter_app(args: dict[str, Any]) -> Any:
    return _built("inpainter", args)


def detector_app(args: dict[str, Any]) -> Any:
    return _built("detector", args)


def upscaler_app(args: dict[str, Any]) -> Any:
    return _built("upscaler", args)
