"""A bounded LRU of what ``GET /v1/files/{id}`` reads from the database, invalidated on write.

Reading a file's detail takes a few queries, and on SQLite each query is several round trips
to the database thread; under a flood of announces every round trip waits for a turn of the
event loop. Hot files are read far more often than they change, so the rows behind a detail
(:class:`FileSnapshot`: manifest, holders' rows, leechers' rows) are kept here. Who is online
is *not* cached: it is overlaid from the liveness map on every read.

The repository calls :meth:`DetailCache.invalidate` after every committed write that changes
what a snapshot holds (registration, replica report, leecher update, download, withdrawal),
naming every file that shares a chunk with the change. A read that was in flight while a
write committed is answered but not stored. With one tracker process per database this is
exact; when several processes share one database (PostgreSQL) the other processes' writes are
seen after ``ttl`` seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from p2pshare.core.manifest import Manifest
from p2pshare.tracker.clock import Clock

MAX_ENTRIES = 4096
MAX_WEIGHT = 2_000_000
"""Most chunk ids plus holder rows kept in all (a few hundred MB at the very worst)."""


@dataclass(frozen=True, slots=True)
class FileSnapshot:
    """The database rows behind one file's detail, as of one read transaction."""

    manifest: Manifest
    owner: str
    replica_target: int
    created: datetime
    downloads: int
    held: tuple[Any, ...]
    """rows (chunk_id, node columns...) of every replica of the file's chunks"""
    leeching: tuple[Any, ...]
    """rows (node columns...) of the active leechers"""
    last_audit: datetime | None = None
    read_at: datetime | None = None
    """the tracker's time as the rows were read (a detail's ``as_of``)"""
    _layout: HolderLayout | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def layout(self) -> HolderLayout:
        """Return ``held`` arranged for building answers (made on first use, then kept)."""
        layout = self._layout
        if layout is None:
            layout = HolderLayout.of(self.manifest, self.held)
            object.__setattr__(self, "_layout", layout)
        return layout

    @property
    def weight(self) -> int:
        """Return the size of this snapshot in chunk ids and rows."""
        return len(self.manifest.chunk_ids) + len(self.held) + len(self.leeching)


@dataclass(frozen=True, slots=True)
class HolderLayout:
    """The replica rows of a snapshot arranged by node and by chunk."""

    rows: dict[str, Any]
    """node id -> the node's first row, in row order"""
    holders: dict[str, tuple[str, ...]]
    """chunk id -> the node ids holding it, in row order (every distinct chunk id is a key)"""
    complete: tuple[str, ...]
    """the node ids holding every chunk of a file that has chunks, in row order"""

    @classmethod
    def of(cls, manifest: Manifest, held: tuple[Any, ...]) -> HolderLayout:
        """Return the layout of the rows ``held`` (``chunk_id``, ``node_id``, ...)."""
        rows: dict[str, Any] = {}
        holders: dict[str, list[str]] = {cid: [] for cid in manifest.chunk_ids}
        counts: dict[str, int] = {}
        for r in held:
            node_id = r.node_id
            holders.setdefault(r.chunk_id, []).append(node_id)
            rows.setdefault(node_id, r)
            counts[node_id] = counts.get(node_id, 0) + 1
        distinct = len(set(manifest.chunk_ids))
        complete = tuple(n for n, c in counts.items() if distinct and c == distinct)
        return cls(rows, {cid: tuple(ns) for cid, ns in holders.items()}, complete)


@dataclass(slots=True)
class _Entry:
    snapshot: FileSnapshot
    loaded: float


class _Load:
    """One read in flight; ``stale`` once a write to its file committed meanwhile."""

    __slots__ = ("stale",)

    def __init__(self) -> None:
        self.stale = False


class DetailCache:
    """LRU of :class:`FileSnapshot` by file id, bounded in entries and in weight."""

    def __init__(
        self,
        clock: Clock,
        *,
        ttl: float | None = None,
        max_entries: int = MAX_ENTRIES,
        max_weight: int = MAX_WEIGHT,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._max_weight = max_weight
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._weight = 0
        self._inflight: dict[str, set[_Load]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, file_id: str, load: Callable[[], Awaitable[FileSnapshot]]) -> FileSnapshot:
        """Return the snapshot of ``file_id``, calling ``load`` when none is cached and fresh.

        Whatever ``load`` raises is raised (and nothing is cached).
        """
        entry = self._entries.get(file_id)
        if entry is not None:
            if self._ttl is None or self._clock.monotonic() - entry.loaded <= self._ttl:
                self._entries.move_to_end(file_id)
                self.hits += 1
                return entry.snapshot
            self._drop(file_id)
        self.misses += 1
        token = _Load()
        started = self._clock.monotonic()
        self._inflight.setdefault(file_id, set()).add(token)
        try:
            snapshot = await load()
        finally:
            loads = self._inflight[file_id]
            loads.discard(token)
            if not loads:
                del self._inflight[file_id]
        if not token.stale:
            self._put(file_id, _Entry(snapshot, started))
        return snapshot

    def invalidate(self, file_ids: Iterable[str]) -> None:
        """Forget ``file_ids``, and keep reads of them that are in flight from being stored."""
        for file_id in file_ids:
            self._drop(file_id)
            for load in self._inflight.get(file_id, ()):
                load.stale = True

    def _put(self, file_id: str, entry: _Entry) -> None:
        weight = entry.snapshot.weight
        if weight > self._max_weight:
            return
        self._drop(file_id)
        self._entries[file_id] = entry
        self._weight += weight
        while len(self._entries) > self._max_entries or self._weight > self._max_weight:
            _, old = self._entries.popitem(last=False)
            self._weight -= old.snapshot.weight

    def _drop(self, file_id: str) -> None:
        entry = self._entries.pop(file_id, None)
        if entry is not None:
            self._weight -= entry.snapshot.weight
