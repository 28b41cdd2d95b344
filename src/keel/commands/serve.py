"""`keel serve`: the production HTTP server for registered models.

The address is checked before anything says "serving": the port is 1-65535 (else exit 2), the
host resolves, and the socket is bound here and handed to uvicorn, so a taken port or a wrong
host is a clear error (exit 2), not a traceback after the banner. Token auth is required when
binding to anything but loopback (``serve.auth: auto``); with no active token the server
refuses to start and says how to create one. ``KEEL_SERVE_TOKEN`` (at least 32 characters) is
accepted as a token with the ``predict`` and ``read`` scopes besides the stored ones: a
container gets it from its orchestrator's secret store (see ``keel build``).

Scale-out: ``--workers N`` runs N server processes on the one port under a supervisor
(:mod:`keel.serve.supervisor`); ``--ray`` runs the same app as a Ray Serve deployment
(:mod:`keel.serve.ray_serve`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from keel.commands.output import ProjectOpt, err
from keel.errors import ConfigError

__all__ = ["TOKEN_ENV", "bind", "is_loopback", "register", "resolve"]

TOKEN_ENV = "KEEL_SERVE_TOKEN"
_MIN_TOKEN = 32
_BACKLOG = 2048


class AuthMode(StrEnum):
    auto = "auto"
    required = "required"
    off = "off"


def register(app: typer.Typer) -> None:
    """Add ``keel serve`` to the `keel` app."""
    app.command("serve")(serve)


def serve(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models to serve: NAME (NAME@ALIAS for keel.yaml's registry.alias, default "
            "production; else the newest version), NAME@ALIAS or NAME@VERSION. Default: every "
            "registered model.",
            show_default=False,
        ),
    ] = None,
    project: ProjectOpt = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default serve.host, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Port, 0-65535; 0: any free one (default serve.port, 8000)."
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model reference(s) to serve (same as NAMES)."),
    ] = None,
    no_log: Annotated[
        bool, typer.Option("--no-log", help="Do not write the prediction log.")
    ] = False,
    auth_mode: Annotated[
        AuthMode | None,
        typer.Option(
            "--auth",
            help="Token auth: auto (on unless loopback), required, off (default serve.auth).",
        ),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log", help="Log each request (id, method, path, status, ms) to stderr."
        ),
    ] = False,
    no_reload: Annotated[
        bool,
        typer.Option("--no-reload", help="Do not follow registry alias moves while running."),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Server processes sharing the port, 1 to 4 per CPU core; a supervisor restarts "
            "one that dies (default serve.workers, 1).",
            show_default=False,
        ),
    ] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Run as a Ray Serve deployment (extra 'ray'; ray_address / KEEL_RAY_ADDRESS, "
            "else a local Ray) instead of this process.",
        ),
    ] = False,
    replicas: Annotated[
        int | None,
        typer.Option(help="With --ray: a fixed number of replicas (default 1).", min=1),
    ] = None,
    min_replicas: Annotated[
        int | None,
        typer.Option(help="With --ray: autoscale from this many replicas.", min=0),
    ] = None,
    max_replicas: Annotated[
        int | None,
        typer.Option(help="With --ray: autoscale up to this many replicas.", min=1),
    ] = None,
    worker_fd: Annotated[
        int | None, typer.Option("--worker-fd", hidden=True, help="Internal: a worker's socket.")
    ] = None,
) -> None:
    """Serve registered models over HTTP: predict, Open Inference Protocol v2, health,
    metadata, /metrics, /docs. Follows alias moves (promotions, rollbacks) without a restart."""
    from keel.project import Project

    if workers is not None:
        _check_workers(workers, "--workers")
    if not ray and (replicas, min_replicas, max_replicas) != (None, None, None):
        raise ConfigError(
            "--replicas, --min-replicas and --max-replicas apply to --ray only; use --workers N "
            "for processes on this machine.",
            field="replicas",
        )
    proj = Project(project)
    config = proj.config.serve
    count = config.workers if workers is None else workers
    _check_workers(count, "serve.workers")
    bind_host = host or config.host
    bind_port = config.port if port is None else port
    resolve(bind_host, bind_port)  # a bad address fails first, whatever else is wrong
    mode = auth_mode.value if auth_mode is not None else config.auth
    refs = [*(names or []), *(model or [])] or None
    if ray:
        if count != 1:
            raise ConfigError("--ray scales with --replicas, not --workers.", field="workers")
        _serve_ray(proj, refs, bind_host, bind_port, mode, no_log=no_log, no_reload=no_reload,
                   replicas=(replicas, min_replicas, max_replicas))  # fmt: skip
        return
    if worker_fd is not None:
        _run_worker(proj, refs, worker_fd, mode, bind_host, not no_log, not no_reload, access_log)
        return
    auth = _authenticator(proj, mode, bind_host)
    sock = bind(bind_host, bind_port, reuse_port=count > 1 and _REUSE_PORT)
    if count > 1:
        _supervise(proj, refs, sock, count, mode, bind_host, auth is not None, no_log=no_log,
                   no_reload=no_reload, access_log=access_log)  # fmt: skip
        return
    from keel.serve.app import create_app

    try:
        server_app = create_app(
            proj,
            models=refs,
            log_predictions=False if no_log else None,
            auth=auth,
            reload=not no_reload,
        )
    except BaseException:
        sock.close()
        raise
    bind_port = int(sock.getsockname()[1])  # the one the system chose for --port 0
    alias = proj.config.registry.alias
    served = ", ".join(
        _label(n, m.version, m.ref or n, alias) for n, m in server_app.models.items()
    )
    shown = f"[{bind_host}]" if ":" in bind_host else bind_host
    state = "token auth on" if auth is not None else "auth off"
    err.print(
        f"serving {served or 'features'} on http://{shown}:{bind_port} ({state}; Ctrl-C to stop)",
        soft_wrap=True,
    )
    from keel.serve.features import unmaterialized

    for warning in unmaterialized(server_app.feature_store, server_app.models):
        err.print(f"warning: {warning}", markup=False, highlight=False)
    if access_log:
        _log_requests()
    _run_uvicorn(server_app, sock, config)


def _label(name: str, version: object, ref: str, alias: str) -> str:
    """``adult@3 (follows @live)`` for the startup line: the version served now and the alias
    the server follows (a bare NAME follows keel.yaml's ``registry.alias``); a pinned
    ``NAME@VERSION`` or ``NAME@latest`` is just ``NAME@VERSION``."""
    _, sep, selector = ref.partition("@")
    followed = alias if not sep else selector
    if followed.isdigit() or followed == "latest":
        return f"{name}@{version}"
    return f"{name}@{version} (follows @{followed})"


def _run_uvicorn(server_app: Any, sock: socket.socket, config: Any) -> None:
    """Run ``server_app`` on ``sock`` (bound) until SIGINT or SIGTERM."""
    import uvicorn

    from keel.serve.protocol import guarded_protocol

    server = uvicorn.Server(
        uvicorn.Config(
            server_app,
            log_level="warning",
            access_log=False,
            loop="uvloop",
            http=guarded_protocol(
                header_timeout=config.idle_timeout_s,
                max_connections=config.max_connections,
                busy_poll_us=config.busy_poll_us,
            ),
            lifespan="on",
            timeout_keep_alive=max(1, round(config.idle_timeout_s)),
        )
    )
    server.run(sockets=[sock])


def _check_workers(count: int, field: str) -> None:
    from keel.serve.supervisor import max_workers

    most = max_workers()
    if not 1 <= count <= most:
        raise ConfigError(
            f"{field} {count} is out of range: use 1-{most} (up to 4 per CPU core; this "
            f"machine has {os.cpu_count() or 1}).",
            field="workers",
        )


def _supervise(
    project: Any,
    refs: list[str] | None,
    sock: socket.socket,
    count: int,
    mode: str,
    host: str,
    auth_on: bool,
    *,
    no_log: bool,
    no_reload: bool,
    access_log: bool,
) -> None:
    """Check the references, then run ``count`` workers on ``sock`` under a supervisor."""
    from keel.errors import NotFoundError
    from keel.serve.supervisor import Supervisor

    sockets = [sock]
    try:
        served = [project.metadata.resolve(ref) for ref in refs or []]
        if refs is None:
            served = [project.metadata.resolve(m["name"]) for m in project.metadata.list_models()]
        if not served and not project.config.feature_views:
            raise NotFoundError("no registered models to serve. Run 'keel run' first.")
        sock.listen(_BACKLOG)
        port = int(sock.getsockname()[1])
        if _REUSE_PORT:  # a socket per worker: the kernel spreads connections evenly
            while len(sockets) < count:
                sockets.append(bind(host, port, reuse_port=True))
                sockets[-1].listen(_BACKLOG)
    except BaseException:
        for opened in sockets:
            opened.close()
        raise
    command = [sys.executable, "-m", "keel.cli", "serve", *(refs or []),
               "--project", str(project.root), "--host", host, "--port", str(port),
               "--auth", mode]  # fmt: skip
    command += ["--no-log"] if no_log else []
    command += ["--no-reload"] if no_reload else []
    command += ["--access-log"] if access_log else []
    shown = f"[{host}]" if ":" in host else host
    alias = project.config.registry.alias
    followed = refs or [v.name for v in served]
    names = ", ".join(
        _label(v.name, v.version, r, alias) for v, r in zip(served, followed, strict=True)
    )
    state = "token auth on" if auth_on else "auth off"
    err.print(
        f"serving {names or 'features'} on http://{shown}:{port} ({count} workers; {state}; "
        "Ctrl-C to stop)",
        soft_wrap=True,
    )
    supervisor = Supervisor(
        command,
        sockets,
        count,
        log=lambda line: err.print(f"keel serve: {line}", markup=False, highlight=False),
        run_dir=project.state_dir / "run",  # the workers' metrics, summed by /metrics
    )
    code = supervisor.run()
    if code:
        raise typer.Exit(code)


def _serve_ray(
    project: Any,
    refs: list[str] | None,
    host: str,
    port: int,
    mode: str,
    *,
    no_log: bool,
    no_reload: bool,
    replicas: tuple[int | None, int | None, int | None],
) -> None:
    """``--ray``: check auth and the references here, then deploy on Ray Serve."""
    from functools import partial

    from keel.serve.ray_serve import RayOptions, ServerSpec, serve_on_ray
    from keel.settings import load_settings

    options = RayOptions.of(*replicas)
    _authenticator(project, mode, host)  # no token: refuse here, not in every replica
    if port == 0:
        raise ConfigError("--ray needs a fixed --port (Ray Serve's proxy cannot pick one).")
    bind(host, port).close()  # a taken port fails here, before Ray starts
    for ref in refs or []:
        project.metadata.resolve(ref)
    spec = ServerSpec(
        root=str(project.root),
        models=tuple(refs) if refs else None,
        authenticator=partial(_replica_authenticator, mode, host),
        log_predictions=False if no_log else None,
        reload=not no_reload,
    )
    serve_on_ray(
        spec,
        options,
        host=host,
        port=port,
        address=load_settings().ray_address or project.config.ray_address,
        announce=lambda line: err.print(line, markup=False, highlight=False),
    )


def _replica_authenticator(mode: str, host: str, project: Any) -> Any:
    """A Ray replica's token checker (module level: pickled by reference)."""
    return _authenticator(project, mode, host, quiet=True)


def _run_worker(
    project: Any,
    refs: list[str] | None,
    fd: int,
    mode: str,
    host: str,
    log: bool,
    reload: bool,
    access_log: bool,
) -> None:
    """One worker of ``--workers N``: the server on the supervisor's listening socket."""
    from keel.serve.app import create_app
    from keel.serve.supervisor import tag_worker, watch_parent

    watch_parent()
    sock = socket.socket(fileno=fd)
    auth = _authenticator(project, mode, host, quiet=True)
    server_app = create_app(
        project, models=refs, log_predictions=None if log else False, auth=auth, reload=reload
    )
    if access_log:
        _log_requests()
    from keel.serve.fleet import join_fleet
    from keel.settings import load_settings

    index = int(load_settings().worker_id or "0")
    fleet = join_fleet(server_app, index)  # /metrics: the fleet; rate limits: shared
    try:
        tag_worker(server_app, index)  # Keel-Worker on every answer
        _run_uvicorn(server_app, sock, project.config.serve)
    finally:
        if fleet is not None:
            fleet.close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve(host: str, port: int) -> tuple[Any, ...]:
    """The address ``host:port`` resolves to (socket family, type, protocol, _, address).

    Raises:
        ConfigError: The port is out of range or the host does not resolve (exit code 2).
    """
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"port {port} is out of range: use 1-65535 (or 0 for any free port).", field="port"
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"host {host!r} does not resolve ({exc}); use an address of this machine, e.g. "
            "127.0.0.1 or 0.0.0.0.",
            field="host",
        ) from exc
    return tuple(infos[0])


# Linux (3.9+): each worker listens on its own socket of one SO_REUSEPORT group (the BSDs
# have the option without the spreading, so they keep one shared socket).
# One shared socket's queue goes to whichever worker wakes first, which at 64 connections
# opened at once left one of two workers with 60 of them (benchmarks/serving/workers.py).
_REUSE_PORT = hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening); with ``reuse_port`` one of a group
    of listening sockets on the port among which the kernel spreads connections
    (``SO_REUSEPORT``: the first of the group must set it too).

    Raises:
        ConfigError: The port is out of range, the host does not resolve, or the address
            cannot be bound (taken, not this machine's); exit code 2.
    """
    family, kind, proto, _, address = resolve(host, port)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host.",
            field="port",
        ) from exc
    return sock


def _authenticator(project: Any, mode: str, host: str, *, quiet: bool = False) -> Any:
    """The token checker the server uses, or None when auth is off."""
    from keel.serve.auth import Authenticator
    from keel.store.tokens import list_tokens, verify_token

    loopback = is_loopback(host)
    if mode == "off" or (mode == "auto" and loopback):
        if not loopback and not quiet:
            err.print(f"warning: no token auth on {host} (serve.auth: off)")
        return None
    database = project.metadata.database
    given = _env_token()
    if given is None and not any(token.active() for token in list_tokens(database)):
        fallback = ", or bind to 127.0.0.1" if mode == "auto" else ""
        raise ConfigError(
            f"listening on {host} requires a token (serve.auth: {mode}) and none is active. "
            "Create one with 'keel tokens create NAME --scope predict' (or set "
            f"{TOKEN_ENV}) and send it as 'Authorization: Bearer <token>'{fallback}.",
            field="serve.auth",
        )
    if given is None:
        return Authenticator(lambda secret: verify_token(database, secret))
    secret_bytes, token = given

    def verify(secret: str) -> Any:
        if hmac.compare_digest(secret.encode(), secret_bytes):
            return token
        return verify_token(database, secret)

    return Authenticator(verify)


def _env_token() -> tuple[bytes, Any] | None:
    """``KEEL_SERVE_TOKEN`` as (secret, a token with the predict and read scopes), or None."""
    from keel.settings import load_settings
    from keel.store.tables import utc_now
    from keel.store.tokens import TokenInfo

    secret = load_settings().serve_token or ""  # surrounding spaces are trimmed
    if not secret:
        return None
    if len(secret) < _MIN_TOKEN or not secret.isprintable():
        raise ConfigError(
            f"{TOKEN_ENV} must be at least {_MIN_TOKEN} printable characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))').",
            field=TOKEN_ENV,
        )
    token = TokenInfo(
        id="env",
        name=TOKEN_ENV,
        scopes=("predict", "read"),
        created_at=utc_now(),
        created_by="environment",
        revoked_at=None,
        expires_at=None,
        rate_limit_per_minute=None,
    )
    return secret.encode(), token


def _log_requests() -> None:
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("keel.serve.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
