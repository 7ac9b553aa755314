"""Which nodes are online: announces held in memory, written behind in batches (lessons 8, 15).

An announce only says "I am alive, and these are my numbers", so it is not committed before
its answer. :class:`Liveness` keeps the last announce of every node with the monotonic time it
arrived; a node is **online** while that time is at most ``3 x heartbeat_interval`` old. This
map is the truth about who is online; after a restart every node counts as offline until it
announces again. The database gets the numbers later: :func:`run_flusher` writes, every
``flush_period``, one transaction with the announces that arrived since the last flush and the
nodes that fell silent (``status`` = offline). The ``nodes`` row is written *before* the
answer only when a node is new or its name, address or offered bytes changed, so a new node
can be named as a holder at once.

Everything here but :func:`run_flusher` is pure: time comes from the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from p2pshare.core.messages import Holder, NodeAnnounce, NodeInfo
from p2pshare.tracker.clock import Clock
from p2pshare.tracker.settings import OFFLINE_AFTER_INTERVALS

log = logging.getLogger(__name__)


@dataclass(slots=True)
class NodeState:
    """A node's last announce and when it arrived.

    The views of it the API shows (:meth:`info`, :meth:`holder`) are made once per state and
    online flag: every file detail naming the node shows the same (immutable) ones until its
    next announce replaces the state.
    """

    announce: NodeAnnounce
    seen: float
    """monotonic seconds"""
    seen_at: datetime
    """wall time, UTC"""
    stopped: bool = False
    """the node said it stopped (offline until its next announce)"""
    _views: dict[bool, tuple[NodeInfo, Holder]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def info(self, *, online: bool) -> NodeInfo:
        """Return the node as the API shows it."""
        return self._view(online)[0]

    def holder(self, *, online: bool) -> Holder:
        """Return the node as a holder of a chunk in a file detail."""
        return self._view(online)[1]

    def _view(self, online: bool) -> tuple[NodeInfo, Holder]:
        view = self._views.get(online)
        if view is None:
            a = self.announce
            info = NodeInfo(
                node_id=a.node_id,
                name=a.name,
                address=a.address,
                offered_bytes=a.offered_bytes,
                used_bytes=a.used_bytes,
                free_bytes=a.free_bytes,
                last_seen=self.seen_at,
                online=online,
            )
            view = self._views[online] = (info, holder_of(info))
        return view


def holder_of(info: NodeInfo) -> Holder:
    """Return the holder entry of a node shown as ``info``."""
    return Holder(node_id=info.node_id, address=info.address, online=info.online, name=info.name)


def reserved_bytes(a: NodeAnnounce) -> int:
    """Return the bytes a node has promised but not yet filled: offered - used - free, >= 0."""
    return max(0, a.offered_bytes - a.used_bytes - a.free_bytes)


@dataclass(slots=True)
class FlushBatch:
    """What one flush writes: fresh numbers of nodes that announced, and nodes now offline."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    """rows for ``UPDATE nodes`` by primary key"""
    offline: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.seen or self.offline)


class Liveness:
    """The in-memory last-seen map. All methods are synchronous and never block."""

    def __init__(self, heartbeat_interval: float, clock: Clock) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0")
        self.heartbeat_interval = heartbeat_interval
        self.offline_after = OFFLINE_AFTER_INTERVALS * heartbeat_interval
        self._clock = clock
        self._nodes: dict[str, NodeState] = {}
        self._identity: dict[str, tuple[str, str, int]] = {}
        self._dirty: set[str] = set()
        self._marked_online: set[str] = set()

    # --- announces ------------------------------------------------------------------------

    def needs_row_write(self, a: NodeAnnounce) -> bool:
        """Return True when the node is new to this process or its name/address/offer changed.

        The caller then writes the node's row before answering, and calls :meth:`row_written`.
        """
        return self._identity.get(a.node_id) != (a.name, a.address, a.offered_bytes)

    def row_written(self, a: NodeAnnounce) -> None:
        """Note that the node's row now holds ``a`` (status online)."""
        self._identity[a.node_id] = (a.name, a.address, a.offered_bytes)
        self._marked_online.add(a.node_id)

    def record(self, a: NodeAnnounce) -> NodeState:
        """Record an announce that arrives now; return the node's state."""
        state = NodeState(a, self._clock.monotonic(), self._clock.now())
        self._nodes[a.node_id] = state
        self._dirty.add(a.node_id)
        return state

    def stopped(self, node_id: str) -> bool:
        """Note that ``node_id`` stopped: offline from now until it announces again, not only
        after ``offline_after`` seconds of silence. Return False for a node not heard from."""
        state = self._nodes.get(node_id)
        if state is None:
            return False
        state.stopped = True
        return True

    # --- queries --------------------------------------------------------------------------

    def get(self, node_id: str) -> NodeState | None:
        """Return the last announce of ``node_id`` since start, or None."""
        return self._nodes.get(node_id)

    def is_online(self, node_id: str) -> bool:
        """Return True when ``node_id`` announced within the last ``offline_after`` seconds."""
        state = self._nodes.get(node_id)
        return state is not None and self._fresh(state, self._clock.monotonic())

    def states(self) -> Iterator[NodeState]:
        """Yield the last state of every node heard from since start, online or not."""
        return iter(self._nodes.values())

    def online(self) -> Iterator[NodeState]:
        """Yield the state of every online node (in no particular order)."""
        now = self._clock.monotonic()
        return (s for s in self._nodes.values() if self._fresh(s, now))

    def _fresh(self, state: NodeState, now: float) -> bool:
        return not state.stopped and now - state.seen <= self.offline_after

    # --- write-behind ---------------------------------------------------------------------

    def take_batch(self) -> FlushBatch:
        """Return what the next flush must write, and forget it (see :meth:`requeue`)."""
        batch = FlushBatch()
        now = self._clock.monotonic()
        for node_id in self._dirty:
            state = self._nodes[node_id]
            a = state.announce
            online = self._fresh(state, now)
            batch.seen.append(
                {
                    "node_id": node_id,
                    "used_bytes": a.used_bytes,
                    "free_bytes": a.free_bytes,
                    "reserved_bytes": reserved_bytes(a),
                    "last_seen": state.seen_at,
                    "status": "online" if online else "offline",
                }
            )
            if online:
                self._marked_online.add(node_id)
            else:
                self._marked_online.discard(node_id)
        self._dirty.clear()
        for node_id in list(self._marked_online):
            state = self._nodes.get(node_id)
            if state is None or not self._fresh(state, now):
                batch.offline.append(node_id)
                self._marked_online.discard(node_id)
        return batch

    def requeue(self, batch: FlushBatch) -> None:
        """Put back a batch whose write failed, so the next flush writes it again."""
        self._dirty.update(row["node_id"] for row in batch.seen if row["node_id"] in self._nodes)
        self._marked_online.update(batch.offline)


class LivenessStore(Protocol):
    """Where batches go (the repository)."""

    async def write_liveness(self, batch: FlushBatch) -> None:
        """Write ``batch`` in one transaction."""
        ...


async def flush_once(liveness: Liveness, store: LivenessStore) -> bool:
    """Write what is pending; return False when the write failed (the batch is kept)."""
    batch = liveness.take_batch()
    if not batch:
        return True
    try:
        await store.write_liveness(batch)
    except (SQLAlchemyError, OSError):
        log.exception(
            "could not write %d announces and %d offline nodes; retrying next flush",
            len(batch.seen),
            len(batch.offline),
        )
        liveness.requeue(batch)
        return False
    return True


async def run_flusher(liveness: Liveness, store: LivenessStore, period: float) -> None:
    """Flush every ``period`` seconds until cancelled (owned by the app's lifespan)."""
    while True:
        await asyncio.sleep(period)
        await flush_once(liveness, store)
