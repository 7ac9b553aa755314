"""The FastAPI application: :func:`create_app` and the lifespan that owns every resource.

The lifespan creates the data directory (SQLite), opens the database, applies the migrations,
marks every node offline (nobody has announced to this process yet), and runs the liveness
flusher in a task group; on shutdown it cancels the flusher, writes the last announces and
closes the database. State lives on ``app.state.tracker``, never in module globals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from p2pshare import __version__
from p2pshare.core.messages import AnnounceAck
from p2pshare.tracker import problems
from p2pshare.tracker.audit import AuditDesk
from p2pshare.tracker.cache import DetailCache
from p2pshare.tracker.clock import Clock, SystemClock
from p2pshare.tracker.db import Database, async_url, sqlite_path
from p2pshare.tracker.fastlane import FastLane
from p2pshare.tracker.guard import RateGate, SourceRateLimit
from p2pshare.tracker.limits import BodySizeLimit
from p2pshare.tracker.liveness import Liveness, flush_once, run_flusher
from p2pshare.tracker.migrate import upgrade
from p2pshare.tracker.repair import RepairDesk
from p2pshare.tracker.repository import Repository
from p2pshare.tracker.routes import router
from p2pshare.tracker.settings import TrackerSettings
from p2pshare.tracker.state import TrackerState

log = logging.getLogger(__name__)

CACHE_TTL_SHARED = 1.0
REPAIR_TASK_TTL = 120.0
AUDIT_TASK_TTL = 60.0
"""Seconds a node has to report a repair task once it was handed over."""
"""Seconds a cached file detail lives when other tracker processes may write the database."""


def create_app(settings: TrackerSettings, *, clock: Clock | None = None) -> FastAPI:
    """Return the tracker's ASGI app; nothing is opened until its lifespan starts.

    ``clock`` replaces the system clocks (tests). Raises :class:`ConfigError` for an
    unsupported database URL.
    """
    the_clock: Clock = clock or SystemClock()
    url = async_url(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db_file = sqlite_path(url)
        if db_file is not None:
            await asyncio.to_thread(db_file.parent.mkdir, parents=True, exist_ok=True)
        # creating the engine resolves the SQLite path on disk: not on the loop
        db = await asyncio.to_thread(Database.open, settings.database_url)
        try:
            revision = await upgrade(db)
            liveness = Liveness(settings.heartbeat_interval, the_clock)
            # one process per SQLite file sees every write; PostgreSQL may be shared
            cache = DetailCache(the_clock, ttl=None if db.is_sqlite else CACHE_TTL_SHARED)
            repo = Repository(db, liveness, the_clock, cache)
            await repo.mark_all_offline()
            ack = AnnounceAck(
                heartbeat_interval=settings.heartbeat_interval,
                offline_after=liveness.offline_after,
            )
            repairs = RepairDesk(
                repo,
                liveness,
                the_clock,
                grace=settings.repair_grace,
                task_ttl=REPAIR_TASK_TTL,
            )
            audits = AuditDesk(repo, liveness, the_clock, repairs, task_ttl=AUDIT_TASK_TTL)
            app.state.tracker = TrackerState(
                settings=settings,
                clock=the_clock,
                db=db,
                liveness=liveness,
                repo=repo,
                repairs=repairs,
                audits=audits,
                announce_ack=ack.model_dump_json().encode(),
            )
            log.info(
                "tracker database %s at schema %s",
                url.render_as_string(hide_password=True),
                revision,
            )
            await app.state.tracker.signatures.start()
            async with asyncio.TaskGroup() as tg:
                flusher = tg.create_task(
                    run_flusher(liveness, repo, settings.flush_period), name="liveness-flusher"
                )
                repairer = tg.create_task(repairs.run(settings.repair_period), name="repair-desk")
                auditor = tg.create_task(audits.run(settings.audit_interval), name="audit-desk")
                try:
                    yield
                finally:
                    flusher.cancel()
                    repairer.cancel()
                    auditor.cancel()
                    await app.state.tracker.signatures.stop()
            await flush_once(liveness, repo)
            log.info("file detail cache: %d hits, %d misses", cache.hits, cache.misses)
            log.info("audits: %d passed, %d failed", audits.passed, audits.failed)
            log.info(
                "repairs: %d assigned, %d done, %d failed or expired",
                repairs.assigned,
                repairs.repaired,
                repairs.failed,
            )
        finally:
            await db.close()

    app = FastAPI(
        title="p2pshare tracker",
        version=__version__,
        description="The catalogue of nodes, files and chunk locations (design.md §1, §4).",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        # no OpenTelemetry spans or metrics per request: nothing exports them here
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    problems.install(app)
    app.include_router(router)
    app.add_middleware(FastLane)  # innermost: inside the limits below
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_size)
    # one gate: the announce lane below ASGI (fastlane.lane_protocol) counts against it too
    app.state.rate_gate = RateGate(settings.limits)
    app.add_middleware(  # outermost: cheapest refusal
        SourceRateLimit, limits=settings.limits, gate=app.state.rate_gate
    )
    return app
