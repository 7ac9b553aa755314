"""Download, the seed's eight steps (design.md §2):

ask the tracker for the manifest and the holders of each chunk, and check the manifest against
the file id asked for (1-3); say this node is a leecher; fetch chunks from several holders at
once, as :class:`~p2pshare.core.scheduler.DownloadScheduler` decides (rarest first,
least-loaded holder, retry elsewhere after an error, timeout or bad hash), verify each and write
it at its offset(s) in ``NAME.part``, keeping it in this node's store so it can serve it
(4-5: the store serves it from the part file, then from the downloaded file, as BitTorrent
clients do; an encrypted download keeps copies, its part file being ciphertext); give the
file its name (never over an existing file unless forced); ack each holder that served it
(6; the holders report to the tracker, 7), report the chunks this node now holds, and report
completion and wait for the tracker's ack (8), which also ends its leecher entry: the three at
once.

``NAME.part.jsonl`` beside the part file lists the chunks written; an interrupted download
re-verifies those from the part file and fetches only the rest.

What is verified: every chunk against its id (its SHA-256) before it is written, and the chunk
ids against the file id (their Merkle root) before anything is fetched, so the file is the one
its id names, byte for byte (BitTorrent v2 and Tahoe-LAFS verify the same way). The
manifest's whole-file SHA-256 is the uploader's statement; hashing the assembled file again to
check it costs one more SHA-256 pass over every byte, about as much CPU as the rest of the
download, so it is done on request (``check_sha256``). An encrypted file's plaintext SHA-256
is always checked, in the decrypting pass that reads the file anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mmap
import os
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Literal

from p2pshare.core.chunking import ChunkPlan
from p2pshare.core.errors import (
    IntegrityError,
    InvalidInput,
    InvalidManifest,
    P2PShareError,
    QuotaExceeded,
    RemoteError,
    Unavailable,
)
from p2pshare.core.ids import chunk_id as hash_chunk
from p2pshare.core.links import decode_key
from p2pshare.core.messages import (
    MAX_REPORT_CHUNKS,
    BadReplica,
    DownloadReport,
    FileDetail,
    Holder,
    LeecherUpdate,
    ReplicaReport,
)
from p2pshare.core.node_messages import (
    DownloadAck,
    DownloadRequest,
    HolderShare,
    TransferResult,
    transfer_result,
)
from p2pshare.core.scheduler import (
    ChunkSource,
    DownloadScheduler,
    FailureKind,
    fetch_limits,
    worth_new_sources,
)
from p2pshare.storage.diskio import BlockFile, aligned_buffer, try_direct
from p2pshare.transfer.context import NodeContext
from p2pshare.transfer.privacy import decrypt_file, opened, shown
from p2pshare.transfer.progress import Transfer
from p2pshare.transfer.records import JsonLines

log = logging.getLogger(__name__)

REPORT_ATTEMPTS = 3
SWARM_PERIOD = 2.0
"""Seconds between reports of chunks held and looks for new sources while fetching."""
SOURCES_HORIZON = 3 * SWARM_PERIOD
"""A fast download with fewer seconds than this left looks for no new sources (see _swarm)."""
SOURCES_FAST = 32 * 2**20
"""Bytes per second from which a download is not short of sources (see _swarm)."""


def part_paths(out: Path) -> tuple[Path, Path]:
    """Return the part file and resume record used while downloading to ``out``."""
    return out.with_name(out.name + ".part"), out.with_name(out.name + ".part.jsonl")


async def check_output(out: Path, force: bool) -> None:
    """Refuse an output path that exists (unless ``force``) or whose directory is unusable."""

    def check() -> None:
        if out.is_dir():
            raise InvalidInput(f"{out}: is a directory; give a file path with -o")
        if out.exists() and not force:
            raise InvalidInput(f"{out}: already exists (use --force to overwrite)")
        parent = out.parent
        if not parent.is_dir():
            problem = "not a directory" if parent.exists() else "no such directory"
            raise InvalidInput(f"{parent}: {problem}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InvalidInput(f"{parent}: not writable")

    await asyncio.to_thread(check)


async def fetch_detail(ctx: NodeContext, file_id: str) -> FileDetail:
    """Return the tracker's detail of ``file_id`` after checking it describes that file."""
    detail = await ctx.tracker.file(file_id)
    manifest = detail.manifest
    if manifest.file_id != file_id:
        raise RemoteError(f"the tracker answered with file {manifest.file_id} for {file_id}")
    try:
        manifest.verify()
    except InvalidManifest as exc:
        raise RemoteError(f"the tracker's manifest of {file_id} is corrupt: {exc.detail}") from None
    return detail


def _open_part(part: Path, size: int) -> int:
    fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    os.ftruncate(fd, size)
    return fd


def _open_writer(part: Path) -> BlockFile:
    """Open the part file again for the chunk writes (and the whole-file hash, when asked):
    direct I/O where the filesystem allows (storage/diskio.py), so the file does not fill the
    page cache."""
    fd = os.open(part, os.O_RDWR | os.O_CLOEXEC)
    return BlockFile(fd, direct=try_direct(fd))


def _write_all(
    out: BlockFile, data: bytes | bytearray | memoryview, offsets: list[int], size: int
) -> None:
    for offset in offsets:
        out.write_at(data, offset, end_of_file=offset + len(data) == size)


def _write_and_record(
    out: BlockFile,
    data: bytes | bytearray | memoryview,
    offsets: list[int],
    size: int,
    record: JsonLines,
    chunk_id: str,
) -> None:
    """Write chunk ``chunk_id`` at every offset it fills, then note it in the resume record
    (one worker-thread hop for both: a hop costs about 100 us of CPU on the test machine)."""
    _write_all(out, data, offsets, size)
    record.append([{"chunk": chunk_id}])


def _written(fd: int, offset: int, length: int, chunk_id: str) -> bytes | None:
    """Return chunk ``chunk_id`` read from ``offset`` of the part file, or None when the bytes
    there are not that chunk."""
    data = os.pread(fd, length, offset)
    return data if len(data) == length and hash_chunk(data) == chunk_id else None


class _InOrderHash:
    """The SHA-256 of the whole file, computed in file order while later chunks still arrive.

    Chunks land in any order; each time the written prefix grows, the new part is read back
    (in a worker thread) and hashed, so the whole-file check costs no
    extra pass at the end. Memory: one read piece.
    """

    def __init__(self, out: BlockFile, plan: ChunkPlan) -> None:
        self._out = out
        self._plan = plan
        self._written = [False] * plan.count
        self._next = 0
        self._wake = asyncio.Event()
        self._digest = hashlib.sha256()

    def mark(self, indices: list[int]) -> None:
        """Say chunks ``indices`` are written to the part file."""
        for i in indices:
            self._written[i] = True
        self._wake.set()

    async def run(self) -> str:
        """Hash chunks in order as they are written; return the hex digest of the file."""
        n = len(self._written)
        while self._next < n:
            if not self._written[self._next]:
                self._wake.clear()
                await self._wake.wait()
                continue
            start = self._plan.span(self._next).offset
            while self._next < n and self._written[self._next]:
                self._next += 1
            end = self._plan.span(self._next - 1).offset + self._plan.span(self._next - 1).length
            try:
                await asyncio.to_thread(self._out.hash_range, self._digest, start, end)
            except OSError as exc:
                raise IntegrityError(f"cannot read the part file back: {exc.strerror}") from None
        return self._digest.hexdigest()


def _finish_file(fd: int, part: Path, out: Path, force: bool) -> None:
    """Move the complete ``part`` (open at ``fd``) to ``out``, durably."""
    os.fsync(fd)
    if force:
        part.replace(out)
    else:
        os.link(part, out)  # fails if out appeared meanwhile: never overwrite
        part.unlink()
    dfd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


async def download(ctx: NodeContext, req: DownloadRequest, t: Transfer) -> TransferResult:
    """Run one download to the end; return its result. Raises our errors."""
    started = time.monotonic()
    me = ctx.identity.node_id
    out = Path(req.path)
    await check_output(out, req.force)
    detail = await fetch_detail(ctx, req.file_id)
    manifest = detail.manifest
    t.file_id = manifest.file_id
    key = decode_key(req.key) if req.key is not None else None
    sealed = opened(manifest, key)  # before any byte is fetched: no key, or the wrong one
    plan = ChunkPlan.for_size(manifest.size, manifest.chunk_size)
    part, record_path = part_paths(out)

    # distinct chunks, the indices each fills, and their holders (online first, not this node)
    indices: dict[str, list[int]] = defaultdict(list)
    for i, cid in enumerate(manifest.chunk_ids):
        indices[cid].append(i)
    addresses: dict[str, str] = {}
    holders: dict[str, list[str]] = {}
    for ch in detail.chunks:
        ordered = sorted(ch.holders, key=lambda h: not h.online)
        holders[ch.chunk_id] = [h.node_id for h in ordered if h.node_id != me]
        addresses.update({h.node_id: h.address for h in ordered})
    names = {h.node_id: h.name for ch in detail.chunks for h in ch.holders if h.name}
    names.update({n.node_id: n.name for n in (*detail.seeders, *detail.leechers)})
    since = detail.as_of  # new sources are asked for from then on
    del detail  # megabytes of objects for a big file: not kept while fetching
    sizes = {cid: plan.span(idx[0]).length for cid, idx in indices.items()}
    sources = [
        ChunkSource(cid, sizes[cid], tuple(idx), tuple(holders.get(cid, ())))
        for cid, idx in indices.items()
    ]
    total, per_holder = fetch_limits(
        max(sizes.values(), default=1),
        budget=ctx.fetch_budget,
        total=ctx.total,
        per_holder=ctx.per_holder,
    )
    sched = DownloadScheduler(sources, per_holder=per_holder, total=total)

    fd = await asyncio.to_thread(_open_part, part, manifest.size)
    writer = await asyncio.to_thread(_open_writer, part)
    record, entries = await asyncio.to_thread(JsonLines.open, record_path)
    # the tracker learns of this leecher while the fetching starts, not before it: its record
    # is a durable write there, and with three downloads starting at once it kept the
    # slowest one from its first fetch for 0.1-0.17 s. Awaited before any later report of
    # this download (a late "started" would open the entry that report ends).
    announced = asyncio.create_task(_leecher(ctx, manifest.file_id, "started"))
    kept = _Held()
    served: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # holder -> [chunks, bytes]
    whole = _InOrderHash(writer, plan) if req.check_sha256 else None
    hashing = asyncio.create_task(whole.run(), name="whole-file-hash") if whole else None
    try:
        t.move("fetching", f"fetching {len(sources)} chunks")
        t.set_total(manifest.size)
        keep_at = part if sealed is None else None  # an encrypted part file is not: copies
        await _resume(
            ctx, t, sched, fd, writer, entries, indices, sizes, plan, record, kept, whole, keep_at
        )
        await _fetch_all(
            ctx,
            t,
            sched,
            writer,
            addresses,
            indices,
            sizes,
            plan,
            record,
            kept,
            served,
            whole,
            keep_at,
            since,
        )

        t.move("verifying", "checking the whole file" if whole else "finishing the file")
        sha = await hashing if hashing is not None else None
        if sha is not None and sha != manifest.sha256:
            await asyncio.to_thread(record.remove)
            raise IntegrityError(  # noqa: TRY301 - the except below only cleans up
                f"the assembled file hashes to {sha}, not {manifest.sha256}; "
                "the part file was kept for inspection"
            )
        if sealed is None:
            await asyncio.to_thread(_finish_file, fd, part, out, req.force)
            await ctx.store.kept_file_moved(part, out)  # served from the file from now on
        else:
            t.note("decrypting")
            plain = out.with_name(out.name + ".plain.part")
            await asyncio.to_thread(decrypt_file, writer, manifest, key, sealed, plain)
            await asyncio.to_thread(_finish_file, fd, plain, out, req.force)
            await asyncio.to_thread(part.unlink)
    except BaseException:
        if hashing is not None:
            hashing.cancel()
            with contextlib.suppress(BaseException):
                await hashing  # its thread is done with the descriptor before it is closed
        await asyncio.to_thread(os.close, fd)
        await asyncio.to_thread(os.close, writer.fd)
        await asyncio.to_thread(record.close)
        await announced
        await _leecher(ctx, manifest.file_id, "stopped")
        raise
    await asyncio.to_thread(os.close, fd)
    await asyncio.to_thread(os.close, writer.fd)
    await asyncio.to_thread(record.remove)

    await announced
    await _after(ctx, manifest.file_id, manifest.size, served, addresses, kept, t)
    sources = [
        HolderShare(node_id=h, name=names.get(h, h), address=addresses[h], chunks=c, bytes=b)
        for h, (c, b) in sorted(served.items())
        if c
    ]
    result = transfer_result(
        manifest, str(out), time.monotonic() - started, sources, sha256_checked=whole is not None
    )
    return shown(result, manifest, key)


async def _resume(
    ctx: NodeContext,
    t: Transfer,
    sched: DownloadScheduler,
    fd: int,
    writer: BlockFile,
    entries: list[dict[str, object]],
    indices: dict[str, list[int]],
    sizes: dict[str, int],
    plan: ChunkPlan,
    record: JsonLines,
    kept: _Held,
    whole: _InOrderHash | None,
    part: Path | None,
) -> None:
    """Count chunks already in the part file (re-verified; kept in the store again as ranges
    of ``part`` when given: a node restarted since has no reference to them) or in this
    node's store."""
    listed = {e.get("chunk") for e in entries}
    for cid, idx in indices.items():
        offsets = [plan.span(i).offset for i in idx]
        written = None
        if cid in listed:
            written = await asyncio.to_thread(_written, fd, offsets[0], sizes[cid], cid)
        if written is not None:
            if len(offsets) > 1:
                await asyncio.to_thread(_write_all, writer, written, offsets[1:], plan.size)
            if part is not None:
                await ctx.store.keep(cid, written, at=(part, offsets[0]))
                kept.add(cid)  # reported held again: the run before may not have said so
        elif await ctx.store.has(cid):
            data = await ctx.store.read(cid)
            await asyncio.to_thread(
                _write_and_record, writer, data, offsets, plan.size, record, cid
            )
            kept.add(cid)
        else:
            continue
        if whole is not None:
            whole.mark(idx)
        sched.mark_done(cid)
        t.advance(sizes[cid] * len(idx))


class _Held:
    """Chunks this download put in the node's store, and how many were reported held."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._sent = 0

    def add(self, chunk_id: str) -> None:
        self._ids.append(chunk_id)

    def unreported(self) -> list[str]:
        """Return the chunks not reported yet, and count them as reported."""
        out = self._ids[self._sent :]
        self._sent = len(self._ids)
        return out


async def _swarm(
    ctx: NodeContext,
    file_id: str,
    sched: DownloadScheduler,
    addresses: dict[str, str],
    kept: _Held,
    wake: asyncio.Event,
    chunk_bytes: int,
    since: datetime | None,
    indices: dict[str, list[int]],
) -> None:
    """Every few seconds while fetching: report the chunks this node now holds (so other
    downloaders can fetch them from here), and add holders the tracker learned of meanwhile
    (other downloaders among them) to the scheduler. Runs until cancelled.

    A look asks only for the holders listed since the last one (from ``since``, the detail's
    ``as_of``; :func:`_new_sources`), not for the whole detail again.

    A download at ``SOURCES_FAST`` or more with under ``SOURCES_HORIZON`` seconds left at
    that pace looks for no new holders (``worth_new_sources``). Three downloads of
    1 GiB at once on one machine, each done in about 5 s, went from 497-553 to 627-673 MB/s
    in all without those looks (each was then a read of the whole file detail), whose
    sources came too late to be used (3 rounds each way,
    paired). A slow download looks to its end: that is when a swarm's last chunks come from
    peers (``bench/swarm.py``: T/T_min 2.0 when the tail did not look, 1.6 when it did)."""
    me = ctx.identity.node_id
    started = time.monotonic()
    left_at_start = sched.remaining
    while True:
        await asyncio.sleep(SWARM_PERIOD)
        batch = sorted(set(kept.unreported()))[:MAX_REPORT_CHUNKS]
        left = sched.remaining
        look = worth_new_sources(
            left,
            left_at_start - left,
            time.monotonic() - started,
            horizon=SOURCES_HORIZON,
            chunk_bytes=chunk_bytes,
            fast=SOURCES_FAST,
        )
        try:
            if batch:
                await ctx.tracker.replicas(file_id, ReplicaReport(node_id=me, held=batch))
            if not look:
                continue
            found, since = await _new_sources(ctx, file_id, since)
        except P2PShareError as exc:
            log.info("swarm update failed (next try in %ss): %s", SWARM_PERIOD, exc.detail)
            continue
        # in the file's order, online first, as a detail lists them: the scheduler breaks
        # ties between equally loaded sources by the order it learned of them
        found.sort(key=lambda f: (indices.get(f[0], [-1])[0], not f[1].online, f[1].node_id))
        added = 0
        for cid, h in found:
            if h.online and h.node_id != me and sched.add_holder(cid, h.node_id):
                addresses[h.node_id] = h.address
                added += 1
        del found
        if added:
            log.info("swarm: %d new sources for chunks of %s", added, file_id[:12])
            wake.set()


async def _new_sources(
    ctx: NodeContext, file_id: str, since: datetime | None
) -> tuple[list[tuple[str, Holder]], datetime | None]:
    """Return the (chunk id, holder) pairs the tracker lists since ``since``, and the time to
    ask from next. With a time, only the replicas written since then (a few holders, whatever
    the file's size); without one (a tracker that gives none), the whole detail."""
    if since is None:
        detail = await ctx.tracker.file(file_id)
        return [(ch.chunk_id, h) for ch in detail.chunks for h in ch.holders], detail.as_of
    new = await ctx.tracker.holders_since(file_id, since)
    return [(n.chunk_id, n.holder) for n in new.holders], new.as_of


async def _fetch_all(
    ctx: NodeContext,
    t: Transfer,
    sched: DownloadScheduler,
    writer: BlockFile,
    addresses: dict[str, str],
    indices: dict[str, list[int]],
    sizes: dict[str, int],
    plan: ChunkPlan,
    record: JsonLines,
    kept: _Held,
    served: dict[str, list[int]],
    whole: _InOrderHash | None,
    part: Path | None,
    since: datetime | None,
) -> None:
    """Run the scheduler's requests until every chunk is written, or some chunk is stuck.

    Each chunk is kept in the store to serve others, as a range of ``part`` when given."""
    wake = asyncio.Event()
    running: dict[tuple[str, str], asyncio.Task[None]] = {}
    # a chunk's bytes are held from the fetch until written: at most the scheduler's ``total``
    # chunks at once, whatever the file size (the scheduler frees a request's slot as soon as
    # it arrives; ``fetch_limits`` keeps those chunks within the node's fetch budget).
    # The buffers are reused: no fresh mapping (and its page faults) per chunk; and
    # page-aligned, so the part file and the store's copy are written from them by direct
    # I/O without a copy into a staging buffer.
    slots = asyncio.Semaphore(sched.total)
    largest = max(sizes.values(), default=0)
    free: list[mmap.mmap] = []

    async def fetch(cid: str, holder: str) -> None:
        async with slots:
            buf = free.pop() if free else aligned_buffer(largest)
            await fetch_and_write(cid, holder, buf)
            # not on cancellation: a worker thread may still be reading the buffer then
            free.append(buf)

    async def fetch_and_write(cid: str, holder: str, buf: mmap.mmap) -> None:
        kind: FailureKind | None = None
        try:
            fetched = await ctx.peers.get_chunk(addresses[holder], cid, sizes[cid], into=buf)
            data = fetched.data
            if fetched.sha256 != cid:
                kind = "bad-hash"
                log.warning("holder %s sent bad bytes for chunk %s", holder, cid)
        except P2PShareError as exc:
            kind = "error"
            log.warning("fetching chunk %s from %s failed: %s", cid[:12], holder, exc.detail)
        finally:
            running.pop((cid, holder), None)
        if kind is not None:
            sched.failed(cid, holder, kind)  # before any await: the chunk may finish meanwhile
            wake.set()
            if kind == "bad-hash":
                await _report_bad(ctx, t.file_id, holder, cid)
            return
        # this copy won: the endgame's other request for the chunk (if any) is stopped
        sched.done(cid, holder)
        for loser in sched.cancelled():
            task = running.pop((loser.chunk_id, loser.holder), None)
            if task is not None:
                task.cancel()
        wake.set()
        offsets = [plan.span(i).offset for i in indices[cid]]
        await asyncio.to_thread(_write_and_record, writer, data, offsets, plan.size, record, cid)
        if whole is not None:
            whole.mark(indices[cid])
        try:
            # hashed above; kept to serve others: served from the part file (then the
            # downloaded file) where the store can, else a copy, not flushed (the file is)
            await ctx.store.keep(cid, data, at=(part, offsets[0]) if part else None)
            kept.add(cid)
        except QuotaExceeded:
            log.info("store full: chunk %s not kept for serving", cid)
        served[holder][0] += 1
        served[holder][1] += sizes[cid]
        t.advance(sizes[cid] * len(indices[cid]))

    stuck: list[str] = []
    async with asyncio.TaskGroup() as tg:
        swarm = tg.create_task(
            _swarm(
                ctx,
                t.file_id or "",
                sched,
                addresses,
                kept,
                wake,
                plan.chunk_size,
                since,
                indices,
            )
        )
        while not sched.finished:
            for req in sched.next_requests():
                key = (req.chunk_id, req.holder)
                running[key] = tg.create_task(fetch(req.chunk_id, req.holder))
            if sched.in_flight == 0:
                stuck = sched.stuck
                if stuck:
                    break  # raised below: from inside the task group it would come out wrapped
            wake.clear()
            if not sched.finished:
                await wake.wait()
        swarm.cancel()
    if stuck:
        raise Unavailable(
            f"{len(stuck)} chunk(s) have no reachable holder left "
            f"(first: {stuck[0][:12]}); try again later"
        )
    if sched.bad_holders:
        names = ", ".join(sorted(sched.bad_holders))
        t.note(f"some holders sent corrupt chunks ({names}); fetched them elsewhere")


async def _report_bad(ctx: NodeContext, file_id: str | None, holder: str, cid: str) -> None:
    """Tell the tracker that ``holder`` sent bytes that do not match chunk ``cid``."""
    if file_id is None:
        return
    report = ReplicaReport(
        node_id=ctx.identity.node_id, bad=[BadReplica(node_id=holder, chunk_id=cid)]
    )
    try:
        await ctx.tracker.replicas(file_id, report)
    except P2PShareError as exc:
        log.warning("could not report the bad copy of %s on %s: %s", cid[:12], holder, exc.detail)


async def _leecher(ctx: NodeContext, file_id: str, state: Literal["started", "stopped"]) -> None:
    """Tell the tracker this node started or stopped downloading ``file_id``; a failure is
    logged only (started: the holders are known already, the download goes on)."""
    try:
        await ctx.tracker.leecher(file_id, LeecherUpdate(node_id=ctx.identity.node_id, state=state))
    except P2PShareError as exc:
        log.info("could not tell the tracker the download %s: %s", state, exc.detail)


async def _after(
    ctx: NodeContext,
    file_id: str,
    size: int,
    served: dict[str, list[int]],
    addresses: dict[str, str],
    kept: _Held,
    t: Transfer,
) -> None:
    """Steps 6-8 and the replica report, after the file has its name.

    The acks, the report of chunks held and the report of completion go at once: none needs
    another. The report of completion also ends this node's leecher entry at the tracker
    (``Repository.report_download``); a separate "stopped" goes only when that report did not
    get through. The two reports are durable writes at the tracker (a commit is fsynced), and
    with three 1 GiB downloads at once on the test machine each took 25-90 ms behind the
    downloads' own disk writes: one after the other, with the "stopped", they added 0.08-0.14
    s to the end of every download."""
    me = ctx.identity.node_id

    async def ack(holder: str, chunks: int, nbytes: int) -> None:
        body = DownloadAck(
            downloader=me, file_id=file_id, chunks=min(chunks, MAX_REPORT_CHUNKS), bytes=nbytes
        )
        try:
            await ctx.peers.ack(addresses[holder], body)
        except P2PShareError as exc:
            log.info("ack to %s failed: %s", holder, exc.detail)

    async def report_held() -> None:
        unreported = kept.unreported()
        for start in range(0, len(unreported), MAX_REPORT_CHUNKS):
            batch = sorted(set(unreported[start : start + MAX_REPORT_CHUNKS]))
            try:
                await ctx.tracker.replicas(file_id, ReplicaReport(node_id=me, held=batch))
            except P2PShareError as exc:
                log.warning("could not report held chunks: %s", exc.detail)

    async def report_done() -> None:
        report = DownloadReport(node_id=me, role="leecher", bytes=size)
        for attempt in range(REPORT_ATTEMPTS):
            try:
                await ctx.tracker.downloads(file_id, report)
            except P2PShareError as exc:
                if attempt == REPORT_ATTEMPTS - 1:
                    t.note(f"downloaded, but the tracker did not record it: {exc.detail}")
                else:
                    await asyncio.sleep(0.5 * 2**attempt)
            else:
                return  # the tracker ended the leecher entry with it
        await _leecher(ctx, file_id, "stopped")

    await asyncio.gather(
        report_held(), report_done(), *(ack(h, c, b) for h, (c, b) in served.items())
    )
