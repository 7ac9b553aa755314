"""Run the tracker on uvicorn (uvloop and httptools when installed).

:func:`run` binds the socket itself, so a port in use is a plain :class:`OSError` before
anything starts and ``port=0`` picks a free port; ``on_ready`` is called with the base URL
once the app's lifespan has finished starting (migrations applied) and the socket accepts.
SIGINT and SIGTERM stop the server cleanly: open requests finish, the lifespan writes the
last announces and closes the database.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import uvicorn

from p2pshare.tracker.app import create_app
from p2pshare.tracker.clock import Clock
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


def base_url(sock: socket.socket) -> str:
    """Return ``http://HOST:PORT`` for a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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
    app = create_app(settings, clock=clock)
    sock = bind(settings.host, settings.port)
    config = uvicorn.Config(
        app,
        loop="auto",
        http="auto",
        lifespan="on",
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config, base_url(sock), on_ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
