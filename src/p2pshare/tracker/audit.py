"""The audit desk: has holders challenge each other's copies, and acts on the outcome.

Every ``audit_interval`` :meth:`AuditDesk.run_once` picks up to ``AUDITS_PER_ROUND`` random
good replicas whose holder is online and, for each, another online holder of the same chunk
with a good copy: the **challenger**. The challenger gets an :class:`AuditTask` with a fresh
nonce in the answer to its next announce, asks the target for HMAC-SHA256(key=nonce, chunk)
(``POST /v1/challenges``), computes the same from its own copy, and reports
(``POST /v1/audits``). ``passed`` refreshes the replica; ``failed`` (wrong answer, chunk
missing) or ``unanswered`` marks it bad, so it is no longer listed or counted, and the repair
desk copies the chunk elsewhere. ``challenger-bad`` (the challenger's own copy no longer
matches the chunk id) marks the challenger's copy bad instead. A task not reported in time is
dropped; a chunk with a single holder cannot be audited this way (nobody to compare with).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy.exc import SQLAlchemyError

from p2pshare.core.audit import new_nonce
from p2pshare.core.errors import Forbidden, NotFound
from p2pshare.core.messages import (
    MAX_REPAIRS_PER_ANNOUNCE,
    AuditReport,
    AuditTask,
    Receipt,
)
from p2pshare.tracker.clock import Clock
from p2pshare.tracker.liveness import Liveness
from p2pshare.tracker.repair import RepairDesk
from p2pshare.tracker.repository import Repository
from p2pshare.tracker.tasks import Outbox

log = logging.getLogger(__name__)

AUDITS_PER_ROUND = 16
CANDIDATES = 64
"""Random replicas drawn per round to find ``AUDITS_PER_ROUND`` with an online challenger."""
MAX_IN_FLIGHT = 128


class AuditDesk:
    """Random replicas in, challenges out, bad copies to the repair desk."""

    def __init__(
        self,
        repo: Repository,
        liveness: Liveness,
        clock: Clock,
        repairs: RepairDesk,
        *,
        task_ttl: float,
    ) -> None:
        self._repo = repo
        self._liveness = liveness
        self._clock = clock
        self._repairs = repairs
        self._task_ttl = task_ttl
        self._outbox: Outbox[AuditTask] = Outbox()
        self.passed = 0
        self.failed = 0

    def take(self, node_id: str) -> list[AuditTask]:
        """Return the challenges queued for ``node_id`` (called when it announces)."""
        return self._outbox.take(
            node_id, MAX_REPAIRS_PER_ANNOUNCE, self._clock.monotonic(), self._task_ttl
        )

    async def report(self, rep: AuditReport) -> Receipt:
        """Record an audit's outcome. Raises :class:`NotFound` for an unknown or expired task
        and :class:`Forbidden` when ``rep.node_id`` was not its challenger."""
        pending = self._outbox.get(rep.task_id)
        if pending is None:
            raise NotFound(f"no audit task {rep.task_id} (it may have expired)")
        if pending.node != rep.node_id:
            raise Forbidden(f"audit task {rep.task_id} was not given to {rep.node_id}")
        self._outbox.pop(rep.task_id)
        task = pending.task
        if rep.outcome == "passed":
            self.passed += 1
            return await self._repo.record_audit(
                task.chunk_id, task.target_id, rep.node_id, passed=True
            )
        bad = rep.node_id if rep.outcome == "challenger-bad" else task.target_id
        self.failed += 1
        log.warning(
            "audit of %s on %s: %s %s", task.chunk_id[:12], task.target_id, rep.outcome, rep.detail
        )
        receipt = await self._repo.record_audit(
            task.chunk_id, bad, rep.node_id, passed=False, detail=f"{rep.outcome} {rep.detail}"
        )
        self._repairs.mark([task.chunk_id])
        return receipt

    async def run(self, interval: float) -> None:
        """Audit every ``interval`` seconds until cancelled (owned by the app's lifespan)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_once()
            except (SQLAlchemyError, OSError):
                log.exception("audit round failed; trying again next round")

    async def run_once(self, limit: int = AUDITS_PER_ROUND) -> list[AuditTask]:
        """Plan one round of challenges; return them (queued for their challengers)."""
        now = self._clock.monotonic()
        self._outbox.expired(now)
        room = min(limit, MAX_IN_FLIGHT - len(self._outbox))
        if room <= 0:
            return []
        picked = [
            (cid, node)
            for cid, node in await self._repo.random_replicas(CANDIDATES)
            if self._liveness.is_online(node)
        ]
        if not picked:
            return []
        copies = await self._repo.chunk_replicas({cid for cid, _ in picked})
        out: list[AuditTask] = []
        for cid, target in picked:
            if len(out) >= room:
                break
            others = sorted(
                n
                for n, good in copies.get(cid, (0, 0, []))[2]
                if good and n != target and self._liveness.is_online(n)
            )
            state = self._liveness.get(target)
            if not others or state is None:
                continue
            challenger = others[len(out) % len(others)]
            task = AuditTask(
                task_id=uuid.uuid4().hex,
                chunk_id=cid,
                target_id=target,
                target_address=state.announce.address,
                nonce=new_nonce(),
            )
            deadline = now + self._task_ttl + 2 * self._liveness.heartbeat_interval
            self._outbox.add(task.task_id, challenger, task, deadline)
            out.append(task)
        return out
