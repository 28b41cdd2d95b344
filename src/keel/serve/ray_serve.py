"""``keel serve --ray``: the same ASGI application as a Ray Serve deployment.

Each replica builds the server exactly as ``keel serve`` does (:func:`keel.serve.app.create_app`
on the project directory: the models from the registry, hot reload, the prediction log, auth,
limits, the worker threads pinned to one OpenMP thread), so every route, header and error is
the same; Ray Serve's HTTP proxy spreads requests over the replicas. Replicas are a fixed number
(``--replicas``) or autoscaled between ``--min-replicas`` and ``--max-replicas`` on the requests
in flight per replica.

The replicas must see the project directory and reach its metadata database (the same machine
or a shared filesystem), as the Ray executor's workers do. On a local Ray the replicas inherit
this process's environment (``KEEL_SERVE_TOKEN`` included). Ray Serve's proxy, not Keel's HTTP
protocol, accepts the connections: the slow-client header deadline and connection cap of
:mod:`keel.serve.protocol` do not apply in front of it (body limits, auth and load shedding do).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keel.errors import ConfigError

__all__ = ["DEPLOYMENT", "RayOptions", "ServerSpec", "deploy", "serve_on_ray"]

DEPLOYMENT = "keel"
"""The Ray Serve application and deployment name."""

TARGET_ONGOING = 32
"""Requests in flight per replica the autoscaler aims at."""


@dataclass(frozen=True)
class RayOptions:
    """Replicas: ``replicas`` fixed, or autoscaled within ``min_replicas..max_replicas``."""

    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None

    @classmethod
    def of(
        cls, replicas: int | None, min_replicas: int | None, max_replicas: int | None
    ) -> RayOptions:
        """Check the CLI's replica options.

        Raises:
            ConfigError: ``--replicas`` together with autoscaling bounds, a bound below 0/1, or
                ``--min-replicas`` above ``--max-replicas``.
        """
        autoscale = min_replicas is not None or max_replicas is not None
        if replicas is not None and autoscale:
            raise ConfigError(
                "use either --replicas N (fixed) or --min-replicas/--max-replicas (autoscaling), "
                "not both.",
                field="replicas",
            )
        if replicas is not None and replicas < 1:
            raise ConfigError(f"--replicas must be at least 1; got {replicas}.", field="replicas")
        if not autoscale:
            return cls(replicas=replicas or 1)
        low = 1 if min_replicas is None else min_replicas
        high = max(low, 1) if max_replicas is None else max_replicas
        if low < 0 or high < 1 or low > high:
            raise ConfigError(
                f"autoscaling bounds {low}..{high} are not valid: need 0 <= --min-replicas <= "
                "--max-replicas and --max-replicas >= 1.",
                field="min_replicas",
            )
        return cls(replicas=max(low, 1), min_replicas=low, max_replicas=high)

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``serve.deployment``."""
        if self.min_replicas is None or self.max_replicas is None:
            return {"num_replicas": self.replicas}
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "initial_replicas": max(self.min_replicas, 1),
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": TARGET_ONGOING,
            },
            "max_ongoing_requests": 4 * TARGET_ONGOING,
        }

    def describe(self) -> str:
        if self.min_replicas is None:
            return f"{self.replicas} replica{'s' if self.replicas != 1 else ''}"
        return f"{self.min_replicas}-{self.max_replicas} replicas (autoscaling)"


@dataclass(frozen=True)
class ServerSpec:
    """What each replica builds: the project, the models, auth and the server's switches.

    ``authenticator`` is called on the replica with the opened project and returns the token
    checker (None: auth off); it must be picklable (a module-level function or a partial).
    """

    root: str
    models: tuple[str, ...] | None
    authenticator: Callable[[Any], Any]
    log_predictions: bool | None = None
    reload: bool = True


class KeelReplica:
    """One Ray Serve replica: builds the Keel server app when the replica starts."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec

    def __serve_build_asgi_app__(self) -> Any:
        from keel.project import Project
        from keel.serve.app import create_app

        spec = self.spec
        project = Project(spec.root)
        return create_app(
            project,
            models=list(spec.models) if spec.models is not None else None,
            log_predictions=spec.log_predictions,
            auth=spec.authenticator(project),
            reload=spec.reload,
        )


def deploy(spec: ServerSpec, options: RayOptions, *, host: str, port: int) -> None:
    """Start Ray Serve's proxy on ``host:port`` and run the Keel deployment (returns once the
    replicas are up). Needs a connected Ray.

    Raises:
        ConfigError: Ray Serve is not installed (the ``ray`` extra), or the deployment
            failed to start.
    """
    try:
        from ray import serve as ray_serve
    except ImportError as exc:  # ray without its serve dependencies
        raise ConfigError(
            f"--ray needs Ray Serve ({exc}); install it with: pip install 'keel[ray]'.",
            field="ray",
        ) from exc
    serve: Any = ray_serve  # typed loosely: Ray's decorators lose the types
    serve.start(http_options={"host": host, "port": port})
    ingress = serve.ingress()(KeelReplica)
    deployment = serve.deployment(ingress, name=DEPLOYMENT, **options.deployment_options())
    try:
        serve.run(deployment.bind(spec), name=DEPLOYMENT, route_prefix="/", blocking=False)
    except RuntimeError as exc:  # a replica failed to start: Ray says which, in its logs
        raise ConfigError(
            f"Ray Serve could not deploy Keel on {host}:{port}: {exc} The replicas' errors are "
            "in Ray's logs (/tmp/ray/session_latest/logs/serve/).",
            field="ray",
        ) from exc


def serve_on_ray(
    spec: ServerSpec,
    options: RayOptions,
    *,
    host: str,
    port: int,
    address: str | None,
    announce: Callable[[str], None],
) -> None:
    """Deploy on Ray (``address``; None: a local Ray) and serve until SIGINT or SIGTERM, then
    delete the deployment (and stop a Ray this call started).

    Raises:
        ConfigError: Ray or Ray Serve is missing or unreachable, or the port is 0 (Ray Serve's
            proxy needs a fixed port).
    """
    from keel.train.search.distributed import ray_session

    if port == 0:
        raise ConfigError("--ray needs a fixed --port (Ray Serve's proxy cannot pick one).")
    stop = threading.Event()
    with ray_session(address):  # Ray installs signal handlers of its own: ours go after
        from ray import serve as ray_serve

        serve: Any = ray_serve
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            deploy(spec, options, host=host, port=port)
            shown = f"[{host}]" if ":" in host else host
            served = ", ".join(spec.models or ()) or "every registered model"
            announce(
                f"serving {served} on http://{shown}:{port} via Ray Serve "
                f"({options.describe()}; Ctrl-C to stop)"
            )
            while not stop.wait(0.5):
                pass
        finally:
            serve.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
