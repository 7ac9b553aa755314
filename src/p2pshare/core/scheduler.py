"""The download scheduler: which chunk to fetch next, from which holder (pure, no I/O).

The download loop asks :meth:`DownloadScheduler.next_requests` for work, runs the fetches, and
reports each outcome with :meth:`done` or :meth:`failed`. The rules:

- **rarest first**: among chunks not yet fetched or in flight, those with the fewest usable
  holders go first; ties go in an order drawn at random for each download, so downloaders
  that start together fetch different chunks and have something to give each other (with
  ties in file order they would all ask the same holder for the same chunks at once);
- **least-loaded holder**: a chunk goes to the usable holder with the fewest requests in flight
  (ties: fewer errors so far, then the tracker's order, which lists online holders first);
- **bounds**: at most ``per_holder`` requests in flight per holder and ``total`` in all;
- **retry elsewhere**: a failed fetch (error, timeout, bad hash) is retried on another holder;
  a holder is never asked again for a chunk it failed; a holder that sent bad bytes is recorded
  in :attr:`bad_holders` for the caller to report, and a holder with ``max_errors`` failures in
  a row is dropped for the whole download;
- a chunk with no usable holder left is **stuck**; :attr:`stuck` lists them so the caller can
  stop with a clear message instead of waiting;
- **endgame**: once every chunk left is in flight and at most ``endgame`` are left, each also
  goes to a second usable holder (within ``per_holder``); the first copy to arrive wins, and
  :meth:`cancelled` hands the caller the now useless requests to stop, so one slow or cut
  holder cannot hold up the end of a download.

A chunk id that appears at several indices of a file is fetched once; the caller writes it at
every offset (see :attr:`ChunkSource.indices`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

FailureKind = Literal["error", "timeout", "bad-hash"]
FETCH_BUDGET = 32 * 1024 * 1024
"""Bytes of chunks a download holds at once by default (fetched, not yet written)."""
ENDGAME_COPIES = 2
"""Requests in flight at once for one chunk during the endgame."""


def fetch_limits(largest: int, *, budget: int, total: int, per_holder: int) -> tuple[int, int]:
    """Return the ``(total, per_holder)`` requests in flight for a download whose largest
    chunk is ``largest`` bytes: ``total`` and ``per_holder`` as given while ``total``
    chunks fit in ``budget`` bytes, fewer for bigger chunks (the two in the same ratio, at
    least 2 and 1, and never more per holder than in all), so a download's memory does not
    grow with its file's chunk size.

    At the default 32 MiB budget: 8 and 4 up to 4 MiB chunks, 4 and 2 at 8 MiB, 2 and 1 from
    16 MiB (64 MiB chunks: 128 MiB, two chunks, where 8 in flight held 512 MiB).
    """
    if largest < 1 or budget < 1 or total < 1 or per_holder < 1:
        raise ValueError("sizes and limits must be at least 1")
    fits = min(total, max(2, budget // largest))
    return fits, max(1, min(per_holder, fits, per_holder * fits // total))


def worth_new_sources(
    left: int, fetched: int, elapsed: float, *, horizon: float, chunk_bytes: int, fast: float
) -> bool:
    """Return True when a download is worth a look for new sources.

    ``fetched`` chunks of about ``chunk_bytes`` came in over the last ``elapsed`` seconds and
    ``left`` are still to come. Each look costs a read of the whole file detail (at the
    tracker and here). It is skipped only for a download that is both fast (``fast`` bytes/s
    or more: its sources are not what holds it back) and nearly done (under ``horizon``
    seconds left at its pace: a source found now would hardly be used). A slow download looks
    to its end, when a swarm's last chunks come from peers; one that has fetched nothing yet
    (stalled, or just started) looks.
    """
    if left <= 0:
        return False
    if fetched <= 0 or elapsed <= 0:
        return True
    if fetched * chunk_bytes / elapsed < fast:
        return True
    return left * elapsed / fetched >= horizon


@dataclass(frozen=True, slots=True)
class ChunkSource:
    """A distinct chunk to fetch: its id, size, the indices it fills, and who holds it."""

    chunk_id: str
    size: int
    indices: tuple[int, ...]
    holders: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Request:
    """Fetch ``chunk_id`` from ``holder``."""

    chunk_id: str
    holder: str


@dataclass
class _Chunk:
    source: ChunkSource
    tried: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)
    done: bool = False


class DownloadScheduler:
    """Decides the fetches of one download; see the module docstring for the rules."""

    def __init__(
        self,
        sources: Iterable[ChunkSource],
        *,
        per_holder: int = 4,
        total: int = 16,
        max_errors: int = 3,
        endgame: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        if per_holder < 1 or total < 1 or max_errors < 1 or endgame < 0:
            raise ValueError("per_holder, total and max_errors must be at least 1")
        self._chunks: dict[str, _Chunk] = {}
        for s in sources:
            if s.chunk_id in self._chunks:
                raise ValueError(f"chunk {s.chunk_id} listed twice")
            self._chunks[s.chunk_id] = _Chunk(s)
        self.per_holder = per_holder
        self.total = total
        self.max_errors = max_errors
        self.endgame = endgame
        draw = rng or random.Random()  # noqa: S311 - an order, not a secret
        self._tiebreak = {cid: draw.random() for cid in self._chunks}
        self._cancelled: list[Request] = []
        self._load: dict[str, int] = {}
        self._errors_in_row: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._dropped: set[str] = set()
        self.bad_holders: dict[str, set[str]] = {}
        """holder -> chunk ids it served with a wrong hash"""
        self._order = {h: i for i, h in enumerate(self._holder_order())}
        # kept as events come, so that a decision costs about the same whatever the file's
        # size: chunks not fetched, requests in flight, and for each holder the waiting chunks
        # it could give, in the order they go (best last), sorted again only after a change
        # of that order
        self._open: dict[str, _Chunk] = dict(self._chunks)
        self._busy = 0
        self._queues: dict[str, list[tuple[tuple[int, float], _Chunk]]] | None = None

    def _holder_order(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self._chunks.values():
            for h in c.source.holders:
                seen.setdefault(h, None)
        return list(seen)

    # --- queries ---------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Return the number of requests handed out and not yet reported."""
        return self._busy

    @property
    def finished(self) -> bool:
        """Return True when every chunk has been fetched."""
        return not self._open

    @property
    def remaining(self) -> int:
        """Return the number of chunks not fetched yet (in flight included)."""
        return len(self._open)

    @property
    def stuck(self) -> list[str]:
        """Return the chunks that are not done, not in flight, and have no usable holder."""
        return [cid for cid, c in self._open.items() if not c.in_flight and not self._usable(c)]

    def _usable(self, c: _Chunk) -> list[str]:
        return [h for h in c.source.holders if h not in c.tried and h not in self._dropped]

    # --- decisions -------------------------------------------------------------------------

    def next_requests(self) -> list[Request]:
        """Return new requests up to the bounds, and mark them in flight."""
        out: list[Request] = []
        if self._busy < self.total:
            queues = self._waiting_by_holder()
            # the rarest waiting chunk that some holder with room could give, again and again
            # (a chunk whose holders are all full now stays so until the call ends)
            while self._busy < self.total:
                best: tuple[tuple[int, float], _Chunk] | None = None
                source: list[tuple[tuple[int, float], _Chunk]] = []
                for holder, queue in queues.items():
                    if holder in self._dropped or self._load.get(holder, 0) >= self.per_holder:
                        continue
                    while queue and (queue[-1][1].done or queue[-1][1].in_flight):
                        queue.pop()  # asked since it was queued (from another holder's queue)
                    if queue and (best is None or queue[-1][0] < best[0]):
                        best, source = queue[-1], queue
                if best is None:
                    break
                source.pop()
                self._ask(best[1], out)
        if not self._open or len(self._open) > self.endgame:
            return out
        left = list(self._open.values())
        if any(not c.in_flight for c in left):
            return out
        # endgame: a second holder for each chunk still in flight (fewest copies first)
        for c in sorted(left, key=lambda c: (len(c.in_flight), self._tiebreak[c.source.chunk_id])):
            if self._busy >= self.total:
                break
            if len(c.in_flight) < ENDGAME_COPIES:
                self._ask(c, out)
        return out

    def _waiting_by_holder(self) -> dict[str, list[tuple[tuple[int, float], _Chunk]]]:
        """Return, for each holder, the chunks not fetched and not in flight that it could
        give, rarest first, in the order they go (the next one last), each with its rank;
        sorted again only after an event that may change the order."""
        if self._queues is None:
            ranked = [
                ((len(self._usable(c)), self._tiebreak[c.source.chunk_id]), c)
                for c in self._open.values()
                if not c.in_flight
            ]
            ranked.sort(key=lambda r: r[0], reverse=True)
            queues: dict[str, list[tuple[tuple[int, float], _Chunk]]] = {}
            for entry in ranked:
                for holder in self._usable(entry[1]):
                    queues.setdefault(holder, []).append(entry)
            self._queues = queues
        return self._queues

    def _ask(self, c: _Chunk, out: list[Request]) -> bool:
        candidates = [
            h
            for h in self._usable(c)
            if h not in c.in_flight and self._load.get(h, 0) < self.per_holder
        ]
        if not candidates:
            return False
        holder = min(
            candidates,
            key=lambda h: (self._load.get(h, 0), self._errors.get(h, 0), self._order[h]),
        )
        c.in_flight.add(holder)
        self._load[holder] = self._load.get(holder, 0) + 1
        self._busy += 1
        out.append(Request(c.source.chunk_id, holder))
        return True

    def cancelled(self) -> list[Request]:
        """Return (and forget) the requests made useless since the last call: another holder
        delivered their chunk first. The caller stops them and reports nothing for them."""
        out, self._cancelled = self._cancelled, []
        return out

    def _settle(self, chunk_id: str, holder: str) -> _Chunk:
        c = self._chunks.get(chunk_id)
        if c is None or holder not in c.in_flight:
            raise ValueError(f"no request for chunk {chunk_id} from {holder} is in flight")
        c.in_flight.discard(holder)
        self._load[holder] -= 1
        self._busy -= 1
        return c

    def done(self, chunk_id: str, holder: str) -> ChunkSource:
        """Record that ``holder`` delivered ``chunk_id`` intact; return the chunk's source."""
        c = self._settle(chunk_id, holder)
        c.done = True
        self._open.pop(chunk_id, None)
        self._errors_in_row[holder] = 0
        for other in sorted(c.in_flight):
            self._load[other] -= 1
            self._busy -= 1
            self._cancelled.append(Request(chunk_id, other))
        c.in_flight.clear()
        return c.source

    def failed(self, chunk_id: str, holder: str, kind: FailureKind) -> None:
        """Record that fetching ``chunk_id`` from ``holder`` failed; it will go elsewhere."""
        c = self._settle(chunk_id, holder)
        c.tried.add(holder)
        self._queues = None  # it waits again, with one holder fewer (and maybe others too)
        self._errors[holder] = self._errors.get(holder, 0) + 1
        self._errors_in_row[holder] = self._errors_in_row.get(holder, 0) + 1
        if kind == "bad-hash":
            self.bad_holders.setdefault(holder, set()).add(chunk_id)
        if self._errors_in_row[holder] >= self.max_errors:
            self._dropped.add(holder)

    def mark_done(self, chunk_id: str) -> None:
        """Record a chunk as already present (resume); it is not fetched."""
        c = self._chunks[chunk_id]
        if c.in_flight:
            raise ValueError(f"chunk {chunk_id} is in flight")
        c.done = True
        self._open.pop(chunk_id, None)

    def add_holder(self, chunk_id: str, holder: str) -> bool:
        """Add a source for a chunk not yet fetched (a holder or another downloader learned
        from the tracker); return whether it is new. Unknown and finished chunks are ignored."""
        c = self._chunks.get(chunk_id)
        if c is None or c.done or holder in c.source.holders:
            return False
        s = c.source
        c.source = ChunkSource(s.chunk_id, s.size, s.indices, (*s.holders, holder))
        self._order.setdefault(holder, len(self._order))
        self._queues = None  # one more usable holder: the chunk is less rare
        return True
