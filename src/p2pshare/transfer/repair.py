"""Repair tasks on the source side: copy a chunk this node holds to the node the tracker chose.

The tracker hands tasks out with announce answers (see ``tracker/repair.py``). For each, this
node reads the chunk from its store, reserves its size on the target, pushes it there (the
target verifies the hash and stores it durably before it acks), releases the reservation and
reports the outcome to the tracker, which records the target as a holder. At most two run at
a time (memory: 2 x chunk size).
"""

from __future__ import annotations

import logging

from p2pshare.core.errors import NotFound, P2PShareError
from p2pshare.core.messages import RepairReport, RepairTask
from p2pshare.core.node_messages import ReservationRequest
from p2pshare.transfer.context import NodeContext
from p2pshare.transfer.tasks import TaskWorker, report_with_retries

log = logging.getLogger(__name__)

RESERVATION_TTL = 300.0


def repair_worker(ctx: NodeContext) -> TaskWorker[RepairTask]:
    """Return the worker that runs this node's repair tasks."""

    async def handle(task: RepairTask) -> None:
        ok, detail = await copy_chunk(ctx, task)
        report = RepairReport(
            node_id=ctx.identity.node_id, task_id=task.task_id, ok=ok, detail=detail
        )
        await report_with_retries(
            f"repair report {task.task_id}", lambda: ctx.tracker.repair(report)
        )

    return TaskWorker("repair", handle)


async def copy_chunk(ctx: NodeContext, task: RepairTask) -> tuple[bool, str]:
    """Copy ``task``'s chunk to its target; return (ok, why not)."""
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
        log.warning("repair of %s to %s failed: %s", task.chunk_id[:12], where, exc.detail)
        return False, exc.detail[:500]
    log.info("repaired %s: copied to %s", task.chunk_id[:12], task.target_id)
    return True, ""
