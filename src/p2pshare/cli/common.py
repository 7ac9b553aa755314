"""What the CLI's commands share: logging set-up, the node's control URL, and JSON output."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from p2pshare.config import Settings
from p2pshare.core.errors import P2PShareError
from p2pshare.node.control_client import ControlClient

if TYPE_CHECKING:
    from p2pshare.cli.app import Context

QUIET_LOGGERS = ("aiosqlite", "asyncio", "alembic.runtime.migration", "aiohttp.access")


class Interrupted(P2PShareError):
    """The user pressed ctrl-C or declined; what was running stopped (and can be resumed)."""

    code = "interrupted"


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (the production profile's format)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(settings: Settings) -> None:
    """Send logs to stderr at the configured level, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for chatty in QUIET_LOGGERS:  # one line per SQLite call or request at DEBUG
        logging.getLogger(chatty).setLevel(max(logging.INFO, root.level))


def control(c: Context, given: str | None) -> ControlClient:
    """Return a client of the local node's control API at ``--node`` or the configured URL.

    Its calls raise :class:`~p2pshare.core.errors.Unavailable`, saying how to start a node,
    when none answers there."""
    return ControlClient(given or c.settings.node_url)


def print_json(doc: Any) -> None:
    """Print ``doc`` as the command's one JSON document."""
    print(json.dumps(doc, indent=2, default=str))


def shown_address(address: str) -> str:
    """Return an address for a table: without its certificate pin (``#...``), which ``--json``
    keeps."""
    return address.partition("#")[0]
