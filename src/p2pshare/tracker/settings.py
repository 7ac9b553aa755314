"""The tracker's settings: the part of :class:`p2pshare.config.Settings` it uses, frozen."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from p2pshare.config import Settings, server_limits
from p2pshare.core.admission import ServerLimits

DB_FILE_NAME = "tracker.db"
OFFLINE_AFTER_INTERVALS = 3
"""A node not heard from for this many heartbeat intervals is offline."""
MAX_FLUSH_PERIOD = 1.0
MAX_REPAIR_PERIOD = 5.0
"""Longest time between two rounds of repair planning."""
"""Longest time an announce waits in memory before it is written behind."""


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """Everything :func:`p2pshare.tracker.app.create_app` and the server need."""

    data_dir: Path
    db_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 7070
    heartbeat_interval: float = 30.0
    max_body_size: int = 96 * 1024**2
    limits: ServerLimits = field(default_factory=ServerLimits)
    """per-client rate, connections, head size and read deadlines (:mod:`.guard`)"""
    log_level: str = "INFO"
    repair_grace: float = 120.0
    audit_interval: float = 60.0
    tls: bool = True
    """serve over TLS with the tracker's own key (DATA_DIR/identity.key) and certificate"""

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackerSettings:
        """Return the tracker's view of the merged ``settings``."""
        return cls(
            data_dir=settings.data_dir,
            db_url=settings.db_url,
            host=settings.tracker_host,
            port=settings.tracker_port,
            heartbeat_interval=settings.heartbeat_interval,
            max_body_size=settings.max_body_size,
            limits=server_limits(settings),
            log_level=settings.log_level,
            repair_grace=settings.repair_grace,
            audit_interval=settings.audit_interval,
            tls=settings.tls,
        )

    @property
    def database_url(self) -> str:
        """Return the database URL: ``db_url``, or the SQLite file in the data dir."""
        if self.db_url is not None:
            return self.db_url
        return f"sqlite+aiosqlite:///{self.data_dir / DB_FILE_NAME}"

    @property
    def offline_after(self) -> float:
        """Return the seconds of silence after which a node counts as offline."""
        return OFFLINE_AFTER_INTERVALS * self.heartbeat_interval

    @property
    def flush_period(self) -> float:
        """Return how often announces held in memory are written to the database."""
        return min(MAX_FLUSH_PERIOD, self.heartbeat_interval / 3)

    @property
    def repair_period(self) -> float:
        """Return how often the repair desk looks for under-replicated chunks."""
        return min(MAX_REPAIR_PERIOD, self.heartbeat_interval)
