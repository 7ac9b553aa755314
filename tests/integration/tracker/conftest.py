"""Fixtures: the tracker app on a real SQLite file in tmp_path, driven through ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from p2pshare.tracker.app import create_app
from p2pshare.tracker.clock import FakeClock
from p2pshare.tracker.settings import TrackerSettings
from p2pshare.tracker.state import TrackerState
from tests.integration.tracker.support import SignAsSender


@dataclass
class Running:
    """A tracker app whose lifespan is running, with a client and its fake clock."""

    app: FastAPI
    client: httpx.AsyncClient
    clock: FakeClock
    settings: TrackerSettings

    @property
    def state(self) -> TrackerState:
        return self.app.state.tracker  # type: ignore[no-any-return]


StartTracker = Callable[..., AbstractAsyncContextManager[Running]]


@pytest.fixture
def start_tracker(tmp_path: Path) -> StartTracker:
    """Return a context manager factory: ``async with start_tracker(**settings) as t``."""

    @asynccontextmanager
    async def start(clock: FakeClock | None = None, **overrides: Any) -> AsyncIterator[Running]:
        settings = TrackerSettings(**{"data_dir": tmp_path / "tracker", **overrides})
        clock = clock or FakeClock()
        app = create_app(settings, clock=clock)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://tracker", auth=SignAsSender()
            ) as client:
                yield Running(app, client, clock, settings)

    return start


@pytest.fixture
async def tracker(start_tracker: StartTracker) -> AsyncIterator[Running]:
    """A running tracker with the default settings (heartbeat 30 s) and a fake clock."""
    async with start_tracker() as t:
        yield t
