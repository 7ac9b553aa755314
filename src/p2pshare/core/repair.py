"""The repair planner: which under-replicated chunk is copied from which holder to which node
(pure, no I/O; the tracker feeds it what it knows and delivers the assignments).

A replica is **live** while its holder is online or has been silent for less than the repair
grace, and its copy was not reported bad. A chunk whose live replicas are fewer than its
target needs ``target - live`` new copies. Rules:

- the **source** is an *online* holder with a good copy, the least busy one first (ties: node
  id), at most ``per_source`` assignments in flight each;
- the **target** is an online node that does not hold the chunk (in any state: a bad or
  silent copy is not overwritten by a second one), is not the source, has the room, and did
  not just fail or lose this chunk; the most free space first (ties: node id);
- chunks with the fewest live replicas go first, at most ``budget`` assignments in all;
- a chunk that already has assignments in flight only gets the copies still missing beyond
  them (planning is idempotent: the same state plans the same work once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Replica:
    """One holder's copy of a chunk, as the tracker sees it now."""

    node_id: str
    online: bool
    live: bool
    """online, or silent for less than the grace period"""
    good: bool = True
    """not reported bad (hash mismatch, failed audit)"""


@dataclass(frozen=True, slots=True)
class ChunkState:
    """A chunk, its size, its replica target and its replicas."""

    chunk_id: str
    size: int
    target: int
    replicas: tuple[Replica, ...]
    in_flight: int = 0
    """copies already assigned and not yet done"""
    tried: frozenset[str] = frozenset()
    """targets that failed for this chunk, or holders that lost it, recently (not chosen)"""

    @property
    def live(self) -> int:
        """Return the number of live, good replicas."""
        return sum(1 for r in self.replicas if r.live and r.good)

    @property
    def missing(self) -> int:
        """Return how many copies to make now (beyond those in flight)."""
        return max(0, self.target - self.live - self.in_flight)


@dataclass(frozen=True, slots=True)
class Assignment:
    """Copy ``chunk_id`` (``size`` bytes) from ``source`` to ``target``."""

    chunk_id: str
    size: int
    source: str
    target: str


@dataclass(slots=True)
class Capacity:
    """What the planner may still use of the online nodes: free bytes and source load."""

    free: dict[str, int]
    """online nodes -> free bytes (only these can be targets)"""
    busy: dict[str, int] = field(default_factory=dict)
    """node -> assignments already in flight with it as the source"""


def plan_repairs(
    chunks: Iterable[ChunkState],
    capacity: Capacity,
    *,
    per_source: int = 4,
    budget: int = 64,
) -> list[Assignment]:
    """Return assignments that bring under-replicated chunks back to their target.

    ``capacity`` is updated as assignments are made (free bytes taken, sources busier), so the
    caller can plan several batches against one view. Chunks that cannot be repaired now (no
    online good source, no target with room) are skipped; the caller tries again later.
    """
    out: list[Assignment] = []
    todo = sorted((c for c in chunks if c.missing > 0), key=lambda c: (c.live, c.chunk_id))
    for chunk in todo:
        holders = {r.node_id for r in chunk.replicas}
        sources = sorted(
            (r.node_id for r in chunk.replicas if r.online and r.good),
            key=lambda n: (capacity.busy.get(n, 0), n),
        )
        for _ in range(chunk.missing):
            if len(out) >= budget:
                return out
            source = next((s for s in sources if capacity.busy.get(s, 0) < per_source), None)
            if source is None:
                break
            target = _pick_target(chunk, holders | {source}, capacity.free)
            if target is None:
                break
            out.append(Assignment(chunk.chunk_id, chunk.size, source, target))
            capacity.free[target] -= chunk.size
            capacity.busy[source] = capacity.busy.get(source, 0) + 1
            holders.add(target)
            sources.sort(key=lambda n: (capacity.busy.get(n, 0), n))
    return out


def _pick_target(chunk: ChunkState, excluded: set[str], free: Mapping[str, int]) -> str | None:
    candidates = [
        (-room, node)
        for node, room in free.items()
        if node not in excluded and node not in chunk.tried and room >= chunk.size
    ]
    return min(candidates)[1] if candidates else None
