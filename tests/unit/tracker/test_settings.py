"""Tracker settings: config fields, their precedence, the database URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pshare.config import load_settings
from p2pshare.core.errors import ConfigError
from p2pshare.tracker.db import async_url, sqlite_path
from p2pshare.tracker.settings import TrackerSettings


def test_defaults() -> None:
    s = load_settings()
    t = TrackerSettings.from_settings(s)
    assert (t.host, t.port, t.heartbeat_interval) == ("127.0.0.1", 7070, 30.0)
    assert t.max_body_size == 96 * 1024**2
    assert t.db_url is None
    assert t.database_url == f"sqlite+aiosqlite:///{s.data_dir / 'tracker.db'}"
    assert (t.offline_after, t.flush_period) == (90.0, 1.0)
    assert TrackerSettings(
        data_dir=Path("/x"), heartbeat_interval=0.3
    ).flush_period == pytest.approx(0.1)


def test_env_file_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('heartbeat_interval = 5\ntracker_port = 8000\nmax_body_size = "1MiB"\n')
    s = load_settings(config_file=cfg)
    assert (s.heartbeat_interval, s.tracker_port, s.max_body_size) == (5.0, 8000, 1024**2)
    monkeypatch.setenv("P2PSHARE_HEARTBEAT_INTERVAL", "2.5")
    monkeypatch.setenv("P2PSHARE_DB_URL", "postgresql+asyncpg://u@db/tracker")
    s = load_settings(config_file=cfg)
    assert (s.heartbeat_interval, s.db_url) == (2.5, "postgresql+asyncpg://u@db/tracker")
    s = load_settings(config_file=cfg, flags={"heartbeat_interval": 0.3, "tracker_port": None})
    assert (s.heartbeat_interval, s.tracker_port) == (0.3, 8000)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="heartbeat_interval"):
        load_settings(flags={"heartbeat_interval": 0})
    with pytest.raises(ConfigError, match="tracker_port"):
        load_settings(flags={"tracker_port": 70000})
    with pytest.raises(ConfigError, match="db_url"):
        load_settings(flags={"db_url": "tracker.db"})
    with pytest.raises(ConfigError, match="max_body_size"):
        load_settings(flags={"max_body_size": "lots"})


def test_database_urls() -> None:
    assert async_url("sqlite:////tmp/t.db").drivername == "sqlite+aiosqlite"
    assert async_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+asyncpg://u:secret@h/db").password == "secret"
    with pytest.raises(ConfigError, match="not supported"):
        async_url("postgresql+psycopg2://u@h/db")
    with pytest.raises(ConfigError, match="does not parse"):
        async_url("::nonsense")
    assert sqlite_path(async_url("sqlite:////tmp/t.db")) == Path("/tmp/t.db")
    assert sqlite_path(async_url("sqlite://")) is None
    assert sqlite_path(async_url("postgresql://u@h/db")) is None
