"""`keel serve`: the production HTTP server for registered models.

The address is checked before anything says "serving": the port is 1-65535 (else exit 2), the
host resolves, and the socket is bound here and handed to uvicorn, so a taken port or a wrong
host is a clear error (exit 2), not a traceback after the banner. Token auth is required when
binding to anything but loopback (``serve.auth: auto``); with no active token the server
refuses to start and says how to create one.
"""

from __future__ import annotations

import ipaddress
import socket
from enum import StrEnum
from typing import Annotated, Any

import typer

from keel.commands.output import ProjectOpt, err
from keel.errors import ConfigError

__all__ = ["bind", "is_loopback", "register", "resolve"]


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
            help="Models to serve: NAME (its production alias, else the newest version), "
            "NAME@ALIAS or NAME@VERSION. Default: every registered model.",
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
) -> None:
    """Serve registered models over HTTP: predict, Open Inference Protocol v2, health,
    metadata, /metrics, /docs. Follows alias moves (promotions, rollbacks) without a restart."""
    import uvicorn

    from keel.project import Project
    from keel.serve.app import create_app
    from keel.serve.protocol import guarded_protocol

    proj = Project(project)
    config = proj.config.serve
    bind_host = host or config.host
    bind_port = config.port if port is None else port
    resolve(bind_host, bind_port)  # a bad address fails first, whatever else is wrong
    mode = auth_mode.value if auth_mode is not None else config.auth
    auth = _authenticator(proj, mode, bind_host)
    sock = bind(bind_host, bind_port)
    try:
        refs = [*(names or []), *(model or [])] or None
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
    served = ", ".join(f"{n}@{m.version}" for n, m in server_app.models.items()) or "features"
    shown = f"[{bind_host}]" if ":" in bind_host else bind_host
    state = "token auth on" if auth is not None else "auth off"
    err.print(f"serving {served} on http://{shown}:{bind_port} ({state}; Ctrl-C to stop)")
    if access_log:
        _log_requests()
    server = uvicorn.Server(
        uvicorn.Config(
            server_app,
            log_level="warning",
            access_log=False,
            loop="uvloop",
            http=guarded_protocol(
                header_timeout=config.idle_timeout_s, max_connections=config.max_connections
            ),
            lifespan="on",
            timeout_keep_alive=max(1, round(config.idle_timeout_s)),
        )
    )
    server.run(sockets=[sock])


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


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening).

    Raises:
        ConfigError: The port is out of range, the host does not resolve, or the address
            cannot be bound (taken, not this machine's); exit code 2.
    """
    family, kind, proto, _, address = resolve(host, port)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host.",
            field="port",
        ) from exc
    return sock


def _authenticator(project: Any, mode: str, host: str) -> Any:
    """The token checker the server uses, or None when auth is off."""
    from keel.serve.auth import Authenticator
    from keel.store.tokens import list_tokens, verify_token

    loopback = is_loopback(host)
    if mode == "off" or (mode == "auto" and loopback):
        if not loopback:
            err.print(f"warning: no token auth on {host} (serve.auth: off)")
        return None
    database = project.metadata.database
    if not any(token.active() for token in list_tokens(database)):
        raise ConfigError(
            f"listening on {host} requires a token (serve.auth: {mode}) and none is active. "
            "Create one with 'keel tokens create NAME --scope predict' and send it as "
            "'Authorization: Bearer <token>', or bind to 127.0.0.1.",
            field="serve.auth",
        )
    return Authenticator(lambda secret: verify_token(database, secret))


def _log_requests() -> None:
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("keel.serve.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
