"""Deleting chunks the tracker says no file needs any more (after an owner withdrew a file).

The tracker names them in announce answers; this node deletes each from its store (one it
does not have is fine), then confirms, and the tracker forgets those replicas. Deletion is
idempotent, so a batch told twice is harmless.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from p2pshare.core.errors import NotFound
from p2pshare.core.messages import ReclaimReport
from p2pshare.transfer.context import NodeContext
from p2pshare.transfer.tasks import TaskWorker, report_with_retries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReclaimBatch:
    """Chunk ids from one announce answer."""

    chunk_ids: tuple[str, ...]
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def reclaim_worker(ctx: NodeContext) -> TaskWorker[ReclaimBatch]:
    """Return the worker that deletes reclaimed chunks and confirms it to the tracker."""

    async def handle(batch: ReclaimBatch) -> None:
        freed = 0
        for cid in batch.chunk_ids:
            try:
                freed += await ctx.store.size(cid)
                await ctx.store.delete(cid)
            except NotFound:
                continue
        log.info("reclaimed %d chunks (%d bytes) no file needs", len(batch.chunk_ids), freed)
        report = ReclaimReport(node_id=ctx.identity.node_id, chunk_ids=list(batch.chunk_ids))
        await report_with_retries("reclaim report", lambda: ctx.tracker.reclaimed(report))

    return TaskWorker("reclaim", handle, concurrency=1)
