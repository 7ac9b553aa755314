"""The node's transfer manager: starts uploads and downloads on request of the control API,
runs each as a task it owns, and lets any number of watchers follow their progress."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from p2pshare.core.chunking import validate_chunk_size
from p2pshare.core.errors import InvalidInput, NotFound, P2PShareError
from p2pshare.core.manifest import validate_name
from p2pshare.core.messages import (
    DrainStatus,
    FileDetail,
    FileSummary,
    NodeInfo,
    Page,
    Receipt,
)
from p2pshare.core.node_messages import (
    DownloadRequest,
    NodeStatus,
    TransferEvent,
    TransferInfo,
    TransferResult,
    UploadRequest,
)
from p2pshare.transfer.context import NodeContext
from p2pshare.transfer.download import check_output, download
from p2pshare.transfer.progress import Transfer
from p2pshare.transfer.upload import check_source, upload

log = logging.getLogger(__name__)

DRAIN_POLL = 1.0
"""Seconds between checks of a leaving node's drain status."""

MAX_KEPT = 1000
"""Finished transfers remembered for listing; older ones are forgotten."""

Job = Callable[[], Awaitable[None]]


class TransferManager:
    """Runs transfers for the control API. Call :meth:`run` in the node's task group."""

    def __init__(self, ctx: NodeContext, *, on_left: Callable[[], None] = lambda: None) -> None:
        self._ctx = ctx
        self._on_left = on_left
        self._leaving: asyncio.Task[None] | None = None
        self._transfers: dict[str, Transfer] = {}
        self._jobs: asyncio.Queue[tuple[Transfer, Job]] = asyncio.Queue()
        self._busy_files: set[str] = set()

    async def run(self) -> None:
        """Start each submitted transfer in a task group owned here; cancel them on exit."""
        async with asyncio.TaskGroup() as tg:
            while True:
                transfer, job = await self._jobs.get()
                transfer.task = tg.create_task(job(), name=f"transfer-{transfer.transfer_id}")

    # -- the control API's service -------------------------------------------------------

    async def status(self) -> NodeStatus:
        """Return this node as it sees itself."""
        ctx = self._ctx
        return NodeStatus(
            node_id=ctx.identity.node_id,
            name=ctx.identity.name,
            address=ctx.identity.address,
            tracker_url=ctx.tracker.base_url,
            offered_bytes=ctx.store.quota,
            used_bytes=ctx.store.used_bytes,
            reserved_bytes=ctx.store.reserved_bytes,
            free_bytes=ctx.store.free_bytes,
            chunks=len(await ctx.store.list()),
        )

    async def peers(self) -> list[NodeInfo]:
        """Return the online nodes with free space, other than this one, most free first."""
        nodes = await self._ctx.tracker.all_nodes(online=True, min_free=1)
        return [n for n in nodes if n.node_id != self._ctx.identity.node_id]

    async def files(self, name: str | None, offset: int, limit: int) -> Page[FileSummary]:
        """Return a page of the tracker's files."""
        return await self._ctx.tracker.files(name=name, offset=offset, limit=limit)

    async def file(self, file_id: str) -> FileDetail:
        """Return one file's detail from the tracker."""
        return await self._ctx.tracker.file(file_id)

    async def leave(self) -> DrainStatus:
        """Start leaving the network: the tracker copies this node's chunks elsewhere, and the
        node stops once none waits (checked every second). Idempotent."""
        me = self._ctx.identity.node_id
        status = await self._ctx.tracker.drain(me)
        if self._leaving is None:
            self._leaving = asyncio.create_task(self._wait_drained(), name="leaving")
        return status

    async def leave_status(self) -> DrainStatus:
        """Return how many of this node's chunks still wait for a copy elsewhere."""
        return await self._ctx.tracker.drain_status(self._ctx.identity.node_id)

    async def _wait_drained(self) -> None:
        me = self._ctx.identity.node_id
        while True:
            await asyncio.sleep(DRAIN_POLL)
            try:
                status = await self._ctx.tracker.drain_status(me)
                if not status.draining:  # the tracker restarted and forgot: ask again
                    status = await self._ctx.tracker.drain(me)
            except P2PShareError as exc:
                log.warning("leaving: drain status unavailable: %s", exc.detail)
                continue
            if status.chunks_waiting == 0 and not self.busy():
                log.info("left the network: every chunk is held elsewhere; stopping")
                self._on_left()
                return

    def busy(self) -> bool:
        """Whether a transfer is still running."""
        return any(t.task is not None and not t.task.done() for t in self._transfers.values())

    async def delete_file(self, file_id: str) -> Receipt:
        """Withdraw ``file_id`` at the tracker as its owner; its holders reclaim the space."""
        return await self._ctx.tracker.delete(file_id, self._ctx.identity.node_id)

    async def start_upload(self, request: UploadRequest) -> TransferInfo:
        """Check the request's local facts, then start the upload; return its info."""
        path = Path(request.path)
        if not path.is_absolute():
            raise InvalidInput(f"{path}: the node needs an absolute path")
        await check_source(path)
        name = validate_name(request.name or path.name)
        if request.chunk_size is not None:
            validate_chunk_size(request.chunk_size)
        transfer = self._new("upload", name)

        async def job() -> None:
            await self._run(transfer, lambda: upload(self._ctx, request, transfer))

        await self._jobs.put((transfer, job))
        return transfer.info()

    async def start_download(self, request: DownloadRequest) -> TransferInfo:
        """Check the output path, then start the download; return its info."""
        path = Path(request.path)
        if not path.is_absolute():
            raise InvalidInput(f"{path}: the node needs an absolute path")
        await check_output(path, request.force)
        key = f"download:{path}"
        if key in self._busy_files:
            raise InvalidInput(f"{path}: a download to this path is already running")
        transfer = self._new("download", path.name)
        transfer.file_id = request.file_id

        async def job() -> None:
            self._busy_files.add(key)
            try:
                await self._run(transfer, lambda: download(self._ctx, request, transfer))
            finally:
                self._busy_files.discard(key)

        await self._jobs.put((transfer, job))
        return transfer.info()

    def transfers(self) -> list[TransferInfo]:
        """Return every remembered transfer, newest first."""
        return [t.info() for t in reversed(self._transfers.values())]

    def events(self, transfer_id: str) -> AsyncIterator[TransferEvent]:
        """Return the progress events of a transfer; raise :class:`NotFound` if unknown."""
        return self._get(transfer_id).events()

    async def cancel(self, transfer_id: str) -> TransferInfo:
        """Stop a running transfer (it stays resumable); return its info once stopped."""
        transfer = self._get(transfer_id)
        if transfer.task is not None and not transfer.final:
            transfer.task.cancel()
            await asyncio.wait({transfer.task}, timeout=10)
        return transfer.info()

    # -- internals ------------------------------------------------------------------------

    def _get(self, transfer_id: str) -> Transfer:
        transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise NotFound(f"no transfer {transfer_id!r} on this node")
        return transfer

    def _new(self, kind: str, name: str) -> Transfer:
        transfer = Transfer(secrets.token_hex(8), kind, name)  # type: ignore[arg-type]
        self._transfers[transfer.transfer_id] = transfer
        while len(self._transfers) > MAX_KEPT:
            oldest = next(iter(self._transfers))
            if not self._transfers[oldest].final:
                break
            del self._transfers[oldest]
        return transfer

    async def _run(self, transfer: Transfer, work: Callable[[], Awaitable[TransferResult]]) -> None:
        """Run ``work`` and settle the transfer; never raises (siblings keep running)."""
        try:
            result = await work()
        except asyncio.CancelledError:
            transfer.cancelled()
            log.info("%s %s cancelled", transfer.kind, transfer.transfer_id)
            return
        except P2PShareError as exc:
            transfer.fail(exc)
            log.warning("%s %s failed: %s", transfer.kind, transfer.transfer_id, exc.detail)
            return
        except Exception as exc:  # a bug: keep the node up, say so
            log.exception("%s %s crashed", transfer.kind, transfer.transfer_id)
            transfer.fail(P2PShareError(f"internal error: {type(exc).__name__}: {exc}"))
            return
        transfer.complete(result, f"{transfer.kind} complete")
        log.info("%s %s complete: %s", transfer.kind, transfer.transfer_id, result.file_id)
