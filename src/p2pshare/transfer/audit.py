"""Audit tasks on the challenger's side: prove another holder still has a chunk we hold.

For each :class:`~p2pshare.core.messages.AuditTask` this node sends the nonce to the target
(``POST /v1/challenges``), computes HMAC-SHA256(key=nonce, chunk) from its own copy (checking
in the same pass that its copy still matches the chunk id), and reports the outcome: passed,
failed (wrong answer or the target has no such chunk), unanswered (target unreachable), or
challenger-bad (its own copy is corrupt: the target is not judged).
"""

from __future__ import annotations

import asyncio
import logging

from p2pshare.core.audit import ProofHasher
from p2pshare.core.errors import NotFound, P2PShareError, Unavailable
from p2pshare.core.messages import AuditOutcome, AuditReport, AuditTask
from p2pshare.core.node_messages import Challenge
from p2pshare.transfer.context import NodeContext
from p2pshare.transfer.tasks import TaskWorker, report_with_retries

log = logging.getLogger(__name__)


def audit_worker(ctx: NodeContext) -> TaskWorker[AuditTask]:
    """Return the worker that runs the audits this node was asked to make."""

    async def handle(task: AuditTask) -> None:
        outcome, detail = await challenge(ctx, task)
        report = AuditReport(
            node_id=ctx.identity.node_id, task_id=task.task_id, outcome=outcome, detail=detail
        )
        await report_with_retries(f"audit report {task.task_id}", lambda: ctx.tracker.audit(report))

    return TaskWorker("audit", handle)


async def expected_answer(ctx: NodeContext, task: AuditTask) -> str | None:
    """Return the right answer from this node's copy, or None when the copy is bad or gone."""
    hasher = ProofHasher(task.nonce)
    try:
        async with await ctx.store.get(task.chunk_id) as reader:
            async for piece in reader:
                await asyncio.to_thread(hasher.update, piece)
    except NotFound:
        return None
    return hasher.answer() if hasher.chunk_id() == task.chunk_id else None


async def challenge(ctx: NodeContext, task: AuditTask) -> tuple[AuditOutcome, str]:
    """Run one audit; return its outcome and a detail for the tracker's history."""
    mine = await expected_answer(ctx, task)
    if mine is None:
        return "challenger-bad", "the challenger's own copy is missing or corrupt"
    body = Challenge(chunk_id=task.chunk_id, nonce=task.nonce)
    try:
        answer = await ctx.peers.challenge(task.target_address, body)
    except Unavailable as exc:
        return "unanswered", exc.detail[:500]
    except P2PShareError as exc:
        return "failed", exc.detail[:500]
    if answer.mac != mine:
        log.warning("audit: %s gave a wrong proof for %s", task.target_id, task.chunk_id[:12])
        return "failed", "wrong proof"
    return "passed", ""
