"""``p2pshare tracker``: run the tracker service in the foreground."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from p2pshare.cli.common import setup_logging
from p2pshare.cli.entry import imports
from p2pshare.config import load_settings

if TYPE_CHECKING:
    from p2pshare.cli.app import Context


def tracker_cmd(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to bind [default: 127.0.0.1].", show_default=False),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=0,
            max=65535,
            help="Port (0: any free one) [default: 7070].",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Data directory; the database is DIR/tracker.db.", show_default=False
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL instead of the SQLite file, e.g. postgresql+asyncpg://u@h/db.",
            show_default=False,
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(
            "--heartbeat-interval",
            metavar="S",
            help="Seconds between node announces; 3 missed = offline [default: 30].",
            show_default=False,
        ),
    ] = None,
    repair_grace: Annotated[
        float | None,
        typer.Option(
            "--repair-grace",
            metavar="S",
            help="Seconds a holder may be offline before its chunks are copied to other "
            "nodes [default: 120 in development, 3600 in production].",
            show_default=False,
        ),
    ] = None,
    audit_interval: Annotated[
        float | None,
        typer.Option(
            "--audit-interval",
            metavar="S",
            help="Seconds between rounds of audits, where holders challenge each other's "
            "copies [default: 60 in development, 600 in production].",
            show_default=False,
        ),
    ] = None,
    tls: Annotated[
        bool | None,
        typer.Option(
            "--tls/--no-tls",
            help="Serve over TLS with the tracker's own certificate [default: on; the "
            "production profile refuses --no-tls].",
            show_default=False,
        ),
    ] = None,
    show_id: Annotated[
        bool,
        typer.Option(
            "--show-id",
            help="Print the URL nodes are to be given (with the certificate fingerprint, made "
            "on first use) and exit.",
        ),
    ] = False,
) -> None:
    """Run the tracker: the catalogue of nodes, files and chunk locations.

    Serves the HTTP API under /v1 (OpenAPI at /openapi.json) until ctrl-C or SIGTERM.
    Prints one line when it is ready: the URL to give nodes, with TLS
    https://HOST:PORT#FINGERPRINT (the fingerprint pins the tracker's certificate).
    """
    # imported here so other commands do not pay for FastAPI, SQLAlchemy, uvicorn and aiohttp
    with imports(aiohttp=True):
        from p2pshare.tracker.server import run, tracker_url
        from p2pshare.tracker.settings import TrackerSettings

    c: Context = ctx.obj
    settings = load_settings(
        profile=c.profile,
        config_file=c.config_file,
        flags={
            "tracker_host": host,
            "tracker_port": port,
            "data_dir": data,
            "db_url": db,
            "heartbeat_interval": heartbeat_interval,
            "repair_grace": repair_grace,
            "audit_interval": audit_interval,
            "tls": tls,
        },
    )
    setup_logging(settings)
    tracker_settings = TrackerSettings.from_settings(settings)
    if show_id:
        url = tracker_url(tracker_settings, settings.tracker_host, settings.tracker_port)
        print(json.dumps({"url": url}) if c.json else url, flush=True)
        return

    def ready(url: str) -> None:
        if c.json:
            print(json.dumps({"listening": url}), flush=True)
        else:
            print(f"p2pshare tracker listening on {url}", flush=True)

    run(tracker_settings, on_ready=ready)
