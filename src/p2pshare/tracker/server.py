"""Run the tracker on uvicorn (uvloop and httptools when installed).

:func:`run` binds the socket itself, so a port in use is a plain :class:`OSError` before
anything starts and ``port=0`` picks a free port; ``on_ready`` is called with the base URL
once the app's lifespan has finished starting (migrations applied) and the socket accepts.
With TLS (the default) the tracker serves with its own key and self-signed certificate
(:mod:`p2pshare.security.keys`, in the data dir) and its URL carries the certificate's
fingerprint, ``https://HOST:PORT#FINGERPRINT``: the URL nodes are given, like an SSH host key.
SIGINT and SIGTERM stop the server cleanly: open requests finish, the lifespan writes the
last announces and closes the database.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from p2pshare.security.keys import load_or_create_identity
from p2pshare.tracker.app import create_app
from p2pshare.tracker.clock import Clock
from p2pshare.tracker.fastlane import AnnounceLaneProtocol, lane_protocol
from p2pshare.tracker.guard import uvicorn_options
from p2pshare.tracker.settings import TrackerSettings

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """Return a TCP socket bound to ``host:port`` (not yet listening); raise OSError."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def base_url(sock: socket.socket, fingerprint: str | None = None) -> str:
    """Return ``http://HOST:PORT`` for a bound socket, or ``https://HOST:PORT#FINGERPRINT``."""
    host, port = sock.getsockname()[:2]
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"https://{where}#{fingerprint}" if fingerprint else f"http://{where}"


def tracker_url(settings: TrackerSettings, host: str, port: int) -> str:
    """Return the URL nodes are given for a tracker on ``host:port`` with ``settings``'s key
    (made on first call), without starting anything (``tracker --show-id``)."""
    if not settings.tls:
        return f"http://{host}:{port}"
    identity = load_or_create_identity(settings.data_dir)
    return f"https://{host}:{port}#{identity.fingerprint}"


class _Server(uvicorn.Server):
    """uvicorn's server, telling its caller when it is ready."""

    def __init__(self, config: uvicorn.Config, url: str, on_ready: Callable[[str], None]) -> None:
        super().__init__(config)
        self._url = url
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then report the address."""
        await super().startup(sockets)
        if self.started:
            log.info("tracker listening on %s", self._url)
            self._on_ready(self._url)


def run(
    settings: TrackerSettings,
    *,
    on_ready: Callable[[str], None] = lambda _url: None,
    clock: Clock | None = None,
) -> None:
    """Serve the tracker until SIGINT or SIGTERM.

    Raises :class:`OSError` when the address cannot be bound and :class:`ConfigError` for an
    unsupported database URL. Exits with status 3 when the app fails to start.
    """
    identity = load_or_create_identity(settings.data_dir) if settings.tls else None
    app = create_app(settings, clock=clock)
    sock = bind(settings.host, settings.port)
    protocol = lane_protocol(settings.limits, app)
    tls: dict[str, str] = {}
    if identity is not None:
        tls = {"ssl_certfile": str(identity.cert_path), "ssl_keyfile": str(identity.key_path)}
    config = uvicorn_config(settings, app, protocol, **tls)
    server = _Server(config, base_url(sock, identity.fingerprint if identity else None), on_ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        counts = protocol.counts
        log.info(
            "announce lane: %d answered below ASGI, %d handed on", counts.answered, counts.handed_on
        )


def uvicorn_config(
    settings: TrackerSettings,
    app: FastAPI,
    protocol: type[AnnounceLaneProtocol],
    **tls: str,
) -> uvicorn.Config:
    """Return the uvicorn configuration that serves ``app`` with ``protocol``
    (:func:`~p2pshare.tracker.fastlane.lane_protocol`) and ``settings``'s limits; ``tls``
    holds ``ssl_certfile`` and ``ssl_keyfile`` to serve over TLS."""
    return uvicorn.Config(
        app,
        loop="auto",
        lifespan="on",
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        **tls,  # type: ignore[arg-type]
        **uvicorn_options(settings.limits, protocol),  # http protocol, connection cap (guard.py)
    )
