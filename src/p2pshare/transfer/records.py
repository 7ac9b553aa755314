"""Small resume records kept beside a transfer, so an interrupted one picks up where it was.

Both are append-only JSON lines, one fact per line, flushed as they are written; a torn last
line (a crash mid-write) is ignored when read back. They are hints, never trusted blindly: an
upload's acks name holders that already verified the chunk, and a download re-verifies every
chunk its record calls done before counting it. All calls block: run them in a thread.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class JsonLines:
    """An append-only file of JSON objects."""

    def __init__(self, path: Path, fh: IO[str]) -> None:
        self.path = path
        self._fh = fh

    @classmethod
    def open(cls, path: Path) -> tuple[JsonLines, list[dict[str, object]]]:
        """Open (creating) the record at ``path``; return it and the objects already in it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        entries: list[dict[str, object]] = []
        try:
            with path.open("r", encoding="utf-8") as fh:
                for line in fh:
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        log.info("ignoring a torn line in %s", path)
                        continue
                    if isinstance(obj, dict):
                        entries.append(obj)
        except FileNotFoundError:
            pass
        return cls(path, path.open("a", encoding="utf-8")), entries

    def append(self, entries: list[dict[str, object]]) -> None:
        """Append ``entries`` and flush them to the OS."""
        self._fh.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
        self._fh.flush()

    def close(self) -> None:
        """Close the file (keeping it)."""
        self._fh.close()

    def remove(self) -> None:
        """Close and delete the record (the transfer is done)."""
        self._fh.close()
        self.path.unlink(missing_ok=True)
