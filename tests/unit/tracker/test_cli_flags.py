"""``p2pshare tracker`` flags override the environment and the file; the server gets them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from p2pshare.cli.app import main
from p2pshare.tracker import server
from p2pshare.tracker.settings import TrackerSettings


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[TrackerSettings]:
    got: list[TrackerSettings] = []

    def fake_run(settings: TrackerSettings, **_kw: Any) -> None:
        got.append(settings)

    monkeypatch.setattr(server, "run", fake_run)
    return got


def test_flags_beat_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: list[TrackerSettings]
) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('heartbeat_interval = 5\ntracker_port = 8000\ntracker_host = "0.0.0.0"\n')
    monkeypatch.setenv("P2PSHARE_TRACKER_PORT", "8100")
    args = ["--config", str(cfg), "tracker", "--data", str(tmp_path / "d")]
    assert main([*args, "--heartbeat-interval", "0.3", "--db", "sqlite:///x.db"]) == 0
    assert main(args) == 0
    with_flags, without = captured
    assert (with_flags.heartbeat_interval, with_flags.port, with_flags.host) == (
        0.3,
        8100,
        "0.0.0.0",
    )
    assert with_flags.db_url == "sqlite:///x.db"
    assert with_flags.data_dir == tmp_path / "d"
    assert (without.heartbeat_interval, without.db_url) == (5.0, None)
    assert main([*args, "--port", "9001", "--host", "127.0.0.2"]) == 0
    assert (captured[-1].port, captured[-1].host) == (9001, "127.0.0.2")


def test_production_profile_reaches_the_tracker(captured: list[TrackerSettings]) -> None:
    assert main(["--env", "production", "tracker"]) == 0
    assert captured[0].log_level == "INFO"
    assert captured[0].data_dir.name == "production"
