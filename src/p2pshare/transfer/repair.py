"""Repair tasks on the source side: copy a chunk this node holds to the node the tracker chose.

The tracker hands tasks out with announce answers (see ``tracker/repair.py``). For each, this
node reads the chunk from its store, reserves its size on the target, pushes it there (the
target verifies the hash and stores it durably before it acks), releases the reservation and
reports the outcome to the tracker, which records the target as a holder. Tasks run at most
``concurrency`` at a time (memory: concurrency x chunk size); the queue is bounded, and a task
seen before is not run again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from p2pshare.core.errors import NotFound, P2PShareError
from p2pshare.core.messages import RepairReport, RepairTask
from p2pshare.core.node_messages import ReservationRequest
from p2pshare.transfer.context import NodeContext

log = logging.getLogger(__name__)

MAX_QUEUE = 256
REMEMBERED = 4096
"""Task ids remembered, so a task delivered twice runs once."""
REPORT_ATTEMPTS = 4
RESERVATION_TTL = 300.0


class RepairWorker:
    """Runs the repair tasks this node was given; owned by the node's task group."""

    def __init__(self, ctx: NodeContext, *, concurrency: int = 2) -> None:
        self._ctx = ctx
        self._concurrency = concurrency
        self._queue: asyncio.Queue[RepairTask] = asyncio.Queue(MAX_QUEUE)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.done = 0
        self.failed = 0

    def submit(self, tasks: list[RepairTask]) -> None:
        """Queue new tasks (never blocks; a full queue drops them: the tracker re-plans)."""
        for task in tasks:
            if task.task_id in self._seen:
                continue
            self._seen[task.task_id] = None
            while len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
            if self._queue.full():
                log.warning("repair queue full: task %s dropped", task.task_id)
                continue
            self._queue.put_nowait(task)

    async def run(self) -> None:
        """Work the queue until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for _ in range(self._concurrency):
                tg.create_task(self._work())

    async def _work(self) -> None:
        while True:
            task = await self._queue.get()
            ok, detail = await self.copy(task)
            await self._report(task, ok, detail)

    async def copy(self, task: RepairTask) -> tuple[bool, str]:
        """Copy ``task``'s chunk to its target; return (ok, why not)."""
        ctx = self._ctx
        where = task.target_address
        try:
            try:
                data = await ctx.store.read(task.chunk_id)
            except NotFound:
                return False, f"chunk {task.chunk_id} is not held here"
            grant = await ctx.peers.reserve(
                where,
                ReservationRequest(
                    requester=ctx.identity.node_id,
                    upload_id=f"repair-{task.task_id}",
                    nbytes=len(data),
                    ttl=RESERVATION_TTL,
                ),
            )
            try:
                await ctx.peers.put_chunk(where, task.chunk_id, data, grant.reservation_id)
            finally:
                try:
                    await ctx.peers.release(where, grant.reservation_id)
                except P2PShareError as exc:
                    log.info("releasing the repair reservation on %s: %s", where, exc.detail)
        except P2PShareError as exc:
            self.failed += 1
            log.warning("repair of %s to %s failed: %s", task.chunk_id[:12], where, exc.detail)
            return False, exc.detail[:500]
        self.done += 1
        log.info("repaired %s: copied to %s", task.chunk_id[:12], task.target_id)
        return True, ""

    async def _report(self, task: RepairTask, ok: bool, detail: str) -> None:
        report = RepairReport(
            node_id=self._ctx.identity.node_id, task_id=task.task_id, ok=ok, detail=detail
        )
        for attempt in range(REPORT_ATTEMPTS):
            try:
                await self._ctx.tracker.repair(report)
            except P2PShareError as exc:
                log.warning("repair report for %s failed: %s", task.task_id, exc.detail)
                await asyncio.sleep(0.5 * 2**attempt)
            else:
                return
