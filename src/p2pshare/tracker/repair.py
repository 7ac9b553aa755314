"""The repair desk: finds chunks below their replica target and hands out copy tasks.

Every ``repair_period`` :meth:`RepairDesk.run_once` looks at a bounded batch of chunks that may
need work ("dirty" chunks), asks :func:`p2pshare.core.repair.plan_repairs` what to copy where,
and queues each assignment for its source node. Chunks become dirty when:

- a holder has been silent longer than ``offline_after + repair_grace`` (all its chunks);
- a replica is reported lost or bad, or a task on the chunk failed or timed out;
- the background sweep reaches them (a bounded slice of all chunks every round, so nothing is
  missed after a restart, when no node has announced yet).

A source gets its tasks in the answer to its next announce (at most
``MAX_REPAIRS_PER_ANNOUNCE``), reserves space on the target, pushes the chunk and reports with
``POST /v1/repairs``; an ok report records the new replica (the target acked it to the
source). Assignments live in memory with a deadline: one that is not reported in time is
dropped and its chunk planned again (a different target first). A node that reports a chunk
lost is not chosen as its target either, for a while. Planning counts assignments
in flight, so the same state never produces the same work twice; a chunk is never copied to
a node that already holds it, so a repeated task is a no-op there. A node that comes back
within the grace period is simply live again; one that comes back later is counted again too
(its replica rows stay), which may leave a chunk above its target.

A node leaving gracefully (``POST /v1/nodes/{id}/drain``) is **draining**: its copies stop
counting toward targets (so every chunk it holds is repaired onto other nodes, with it as a
source) and it is never a target; it polls the drain status and stops once no chunk waits.

The desk also tells holders which chunks no available file contains any more (after an owner
withdrew a file): up to ``MAX_RECLAIMS_PER_ANNOUNCE`` with each announce answer; the node
deletes them and confirms with ``POST /v1/reclaims``, and the replica rows go (if a file that
needs one of them was registered meanwhile, that chunk is repaired like any other). The
orphans are found in the database each round, so a restart or an offline node loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable

from sqlalchemy.exc import SQLAlchemyError

from p2pshare.core.errors import Forbidden, NotFound
from p2pshare.core.messages import (
    MAX_RECLAIMS_PER_ANNOUNCE,
    MAX_REPAIRS_PER_ANNOUNCE,
    DrainStatus,
    Receipt,
    ReclaimReport,
    RepairReport,
    RepairTask,
)
from p2pshare.core.repair import Assignment, Capacity, ChunkState, Replica, plan_repairs
from p2pshare.tracker.clock import Clock
from p2pshare.tracker.liveness import Liveness
from p2pshare.tracker.repository import Repository
from p2pshare.tracker.tasks import Outbox

log = logging.getLogger(__name__)

BATCH = 500
"""Most dirty chunks looked at per round."""
SWEEP = 500
"""Chunks the background sweep marks dirty per round."""
PER_SOURCE = 4
"""Most tasks in flight per source node."""
BUDGET = 256
"""Most tasks in flight in all (the rate bound of repairs)."""
TRIED_FOR = 300.0
"""Seconds a target that failed a chunk, or a holder that lost it, is not chosen for it."""
RECLAIM_BATCH = 1000
"""Orphan replicas looked up per round."""
MAX_RECLAIMS_PENDING = 20_000
RECLAIM_TTL = 600.0
"""Seconds a node has to confirm a deletion before it is told again."""


class RepairDesk:
    """Under-replicated chunks in, copy tasks out; all state in memory, bounded."""

    def __init__(
        self,
        repo: Repository,
        liveness: Liveness,
        clock: Clock,
        *,
        grace: float,
        task_ttl: float,
    ) -> None:
        self._repo = repo
        self._liveness = liveness
        self._clock = clock
        self.grace = grace
        self._task_ttl = task_ttl
        self._started = clock.monotonic()
        self._dirty: dict[str, None] = {}
        self._outbox: Outbox[RepairTask] = Outbox()
        self._reclaims: Outbox[str] = Outbox()
        self._draining: set[str] = set()
        self._tried: dict[str, dict[str, float]] = {}
        self._expired: set[str] = set()
        self._sweep_cursor = ""
        self.assigned = 0
        self.repaired = 0
        self.failed = 0

    # --- inputs ---------------------------------------------------------------------------

    def mark(self, chunk_ids: Iterable[str]) -> None:
        """Look at these chunks in the next rounds."""
        for cid in chunk_ids:
            self._dirty[cid] = None

    def take(self, node_id: str) -> list[RepairTask]:
        """Return the tasks queued for ``node_id`` (called when it announces)."""
        return self._outbox.take(
            node_id, MAX_REPAIRS_PER_ANNOUNCE, self._clock.monotonic(), self._task_ttl
        )

    async def drain(self, node_id: str) -> DrainStatus:
        """Start copying every chunk of ``node_id`` elsewhere (it is leaving); its status.

        A draining node still serves as a source, but its copies no longer count and it is
        never a target. Idempotent. Raises :class:`NotFound` for a node not online.
        """
        if not self._liveness.is_online(node_id):
            raise NotFound(f"node {node_id} is not online")
        if node_id not in self._draining:
            self._draining.add(node_id)
            held = await self._repo.chunks_held_by(node_id)
            log.info("node %s is leaving: %d chunks to copy elsewhere", node_id, len(held))
            self.mark(held)
        return await self.drain_status(node_id)

    def is_draining(self, node_id: str) -> bool:
        """Whether ``node_id`` is leaving (it takes no new chunks)."""
        return node_id in self._draining

    async def drain_status(self, node_id: str) -> DrainStatus:
        """Return how many of ``node_id``'s chunks still need a copy without it."""
        held = await self._repo.chunks_held_by(node_id)
        known = await self._repo.chunk_replicas(held)
        now = self._clock.monotonic()
        waiting = 0
        for _cid, (_size, target, holders) in known.items():
            others = sum(1 for n, good in holders if good and n != node_id and self._counts(n, now))
            waiting += others < target
        return DrainStatus(
            node_id=node_id,
            draining=node_id in self._draining,
            chunks_held=len(held),
            chunks_waiting=waiting,
        )

    def take_reclaims(self, node_id: str) -> list[str]:
        """Return chunk ids ``node_id`` may delete (no available file contains them)."""
        return self._reclaims.take(
            node_id, MAX_RECLAIMS_PER_ANNOUNCE, self._clock.monotonic(), RECLAIM_TTL
        )

    async def lost(self, rep: ReclaimReport) -> Receipt:
        """Forget replicas a node lost (its integrity scan quarantined them); repair them,
        elsewhere (see :meth:`shun`)."""
        known = await self._repo.chunk_replicas(rep.chunk_ids)
        held = [c for c, (_, _, hs) in known.items() if any(n == rep.node_id for n, _ in hs)]
        receipt = await self._repo.forget_replicas(rep.node_id, rep.chunk_ids, "chunks-lost")
        log.warning("node %s lost %d chunks; repairing them", rep.node_id, len(rep.chunk_ids))
        self.shun(rep.node_id, held)
        self.mark(rep.chunk_ids)
        return receipt

    def shun(self, node_id: str, chunk_ids: Iterable[str]) -> None:
        """``node_id`` lost these chunks (its copy rotted or went): for ``TRIED_FOR`` seconds
        it is not their repair target, as a target that failed them is not. Its disk is the
        one place known to have lost them, and its copy would not make the chunk safer."""
        until = self._clock.monotonic() + TRIED_FOR
        for cid in chunk_ids:
            self._tried.setdefault(cid, {})[node_id] = until

    async def reclaimed(self, rep: ReclaimReport) -> Receipt:
        """Forget the replicas a node deleted on our word."""
        for cid in rep.chunk_ids:
            self._reclaims.pop(f"{rep.node_id}:{cid}")
        receipt = await self._repo.forget_replicas(rep.node_id, rep.chunk_ids)
        self.mark(rep.chunk_ids)  # a file registered meanwhile may need them again
        return receipt

    async def report(self, rep: RepairReport) -> Receipt:
        """Record how a task ended. Raises :class:`NotFound` for an unknown (or expired) task
        and :class:`Forbidden` when ``rep.node_id`` was not given it.
        """
        pending = self._outbox.get(rep.task_id)
        if pending is None:
            raise NotFound(f"no repair task {rep.task_id} (it may have expired)")
        if pending.node != rep.node_id:
            raise Forbidden(f"repair task {rep.task_id} was not given to {rep.node_id}")
        task = pending.task
        self._outbox.pop(rep.task_id)
        self.mark([task.chunk_id])
        if not rep.ok:
            self.failed += 1
            self._tried.setdefault(task.chunk_id, {})[task.target_id] = (
                self._clock.monotonic() + TRIED_FOR
            )
            log.info(
                "repair of %s to %s failed: %s", task.chunk_id[:12], task.target_id, rep.detail
            )
            return Receipt(recorded="repair-failed", at=self._clock.now())
        self.repaired += 1
        return await self._repo.record_repair(
            task.chunk_id, rep.node_id, task.target_id, task.task_id
        )

    # --- the loop -------------------------------------------------------------------------

    async def run(self, period: float) -> None:
        """Plan every ``period`` seconds until cancelled (owned by the app's lifespan)."""
        while True:
            await asyncio.sleep(period)
            try:
                await self.run_once()
            except (SQLAlchemyError, OSError):
                log.exception("repair round failed; trying again next round")

    async def run_once(self) -> list[Assignment]:
        """One round: expire tasks, find silent holders, sweep, plan; return new assignments."""
        now = self._clock.monotonic()
        self._expire_tasks(now)
        await self._mark_silent_holders(now)
        await self._sweep()
        await self._plan_reclaims(now)
        batch = list(self._dirty)[:BATCH]
        for cid in batch:
            del self._dirty[cid]
        if not batch:
            return []
        known = await self._repo.chunk_replicas(batch)
        in_flight: dict[str, int] = {}
        busy: dict[str, int] = {}
        promised: dict[str, int] = {}
        for p in self._outbox:
            in_flight[p.task.chunk_id] = in_flight.get(p.task.chunk_id, 0) + 1
            busy[p.node] = busy.get(p.node, 0) + 1
            promised[p.task.target_id] = promised.get(p.task.target_id, 0) + p.task.size
        states = []
        for cid, (size, target, holders) in known.items():
            tried = {n for n, until in self._tried.get(cid, {}).items() if until > now}
            replicas = tuple(
                Replica(n, online=self._liveness.is_online(n), live=self._counts(n, now), good=g)
                for n, g in holders
            )
            states.append(
                ChunkState(cid, size, target, replicas, in_flight.get(cid, 0), frozenset(tried))
            )
        free = {
            st.announce.node_id: st.announce.free_bytes - promised.get(st.announce.node_id, 0)
            for st in self._liveness.online()
            if st.announce.node_id not in self._draining
        }
        room = max(0, BUDGET - len(self._outbox))
        plan = plan_repairs(
            states, Capacity(free=free, busy=busy), per_source=PER_SOURCE, budget=room
        )
        for a in plan:
            self._assign(a, now)
        planned: dict[str, int] = {}
        for a in plan:
            planned[a.chunk_id] = planned.get(a.chunk_id, 0) + 1
        # still short (no online source or no room yet): look again in a later round
        self.mark([st.chunk_id for st in states if st.missing > planned.get(st.chunk_id, 0)])
        return plan

    # --- helpers --------------------------------------------------------------------------

    def _counts(self, node_id: str, now: float) -> bool:
        """Whether ``node_id``'s copies count toward targets: live and not leaving."""
        return node_id not in self._draining and self._live(node_id, now)

    def _live(self, node_id: str, now: float) -> bool:
        state = self._liveness.get(node_id)
        allowed = self._liveness.offline_after + self.grace
        if state is None:  # not heard from since this tracker started
            return now - self._started <= allowed
        return now - state.seen <= allowed

    def _assign(self, a: Assignment, now: float) -> None:
        target = self._liveness.get(a.target)
        if target is None:
            return
        task = RepairTask(
            task_id=uuid.uuid4().hex,
            chunk_id=a.chunk_id,
            size=a.size,
            target_id=a.target,
            target_address=target.announce.address,
        )
        # a task waits up to a heartbeat or two to be delivered, then task_ttl to be done
        deadline = now + self._task_ttl + 2 * self._liveness.heartbeat_interval
        self._outbox.add(task.task_id, a.source, task, deadline)
        self.assigned += 1
        log.info("repair: copy %s from %s to %s", a.chunk_id[:12], a.source, a.target)

    def _expire_tasks(self, now: float) -> None:
        for p in self._outbox.expired(now):
            self.failed += 1
            self._tried.setdefault(p.task.chunk_id, {})[p.task.target_id] = now + TRIED_FOR
            self.mark([p.task.chunk_id])
        for cid, tried in list(self._tried.items()):
            for node, until in list(tried.items()):
                if until <= now:
                    del tried[node]
            if not tried:
                del self._tried[cid]

    async def _mark_silent_holders(self, now: float) -> None:
        allowed = self._liveness.offline_after + self.grace
        for state in list(self._liveness.states()):
            node_id = state.announce.node_id
            if now - state.seen <= allowed:
                self._expired.discard(node_id)
            elif node_id not in self._expired:
                self._expired.add(node_id)
                held = await self._repo.chunks_held_by(node_id)
                log.info(
                    "node %s silent past the repair grace: %d chunks to check", node_id, len(held)
                )
                self.mark(held)
                self._drop_tasks_of(node_id)

    def _drop_tasks_of(self, node_id: str) -> None:
        """Forget the tasks a silent node was to carry out or receive: their chunks are
        planned again at once (from other sources), not after the task's deadline."""
        for p in self._outbox:
            if node_id in (p.node, p.task.target_id):
                self._outbox.pop(p.task.task_id)
                self.failed += 1
                self.mark([p.task.chunk_id])

    async def _plan_reclaims(self, now: float) -> None:
        self._reclaims.expired(now)
        if len(self._reclaims) >= MAX_RECLAIMS_PENDING:
            return
        for cid, node in await self._repo.orphan_replicas(RECLAIM_BATCH):
            key = f"{node}:{cid}"
            if self._liveness.is_online(node) and self._reclaims.get(key) is None:
                self._reclaims.add(key, node, cid, now + RECLAIM_TTL)

    async def _sweep(self) -> None:
        ids = await self._repo.chunk_ids_after(self._sweep_cursor, SWEEP)
        self._sweep_cursor = ids[-1] if len(ids) == SWEEP else ""
        self.mark(ids)
