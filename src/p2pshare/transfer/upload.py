"""Upload, the seed's twelve steps (design.md §2):

list online nodes with free space (2); check the user's allocation can hold the file with the
requested replicas before anything is sent (3); hash and chunk the file once into this node's
own store, the chunk assembly folder (4-5); reserve space on every chosen holder (6); push
chunks with bounded concurrency, several connections per holder (7); collect each holder's ack
(8); re-place the chunks of a holder that fails on another holder with room, or fail cleanly
with the reservations released; register at the tracker only with every ack in hand (9) and
wait for its ack (10); return the result (11).

Every ack is appended to a resume record (``DATA/uploads/<file_id>.jsonl``), so re-running an
interrupted upload of the same file sends only the chunks not yet acked.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from p2pshare.core.chunking import ChunkPlan, validate_chunk_size
from p2pshare.core.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    P2PShareError,
    QuotaExceeded,
    RemoteError,
    ReservationError,
    Unavailable,
)
from p2pshare.core.manifest import Manifest, validate_name
from p2pshare.core.messages import ChunkAck, FileDetail, FileRegistration, NodeInfo, Placement
from p2pshare.core.node_messages import (
    HolderShare,
    ReservationGrant,
    ReservationRequest,
    TransferResult,
    UploadRequest,
    transfer_result,
)
from p2pshare.core.placement import ChunkNeed, PlacementError, plan_placement
from p2pshare.core.sizes import format_size
from p2pshare.security import sealing
from p2pshare.security.keys import load_or_create_file_key
from p2pshare.storage import diskio
from p2pshare.storage.hasher import ingest_file
from p2pshare.transfer.context import NodeContext
from p2pshare.transfer.privacy import shown
from p2pshare.transfer.progress import Transfer
from p2pshare.transfer.records import JsonLines

log = logging.getLogger(__name__)

HOLDER_FAULTS = (Unavailable, RemoteError, QuotaExceeded, ReservationError, IntegrityError)
"""Errors from a holder that make us give up on it and re-place its chunks."""


def choose_budgets(nodes: list[NodeInfo], allocation: Mapping[str, int] | None) -> dict[str, int]:
    """Return each candidate holder's budget: the user's allocation, or (auto) its free space.

    Raises :class:`InvalidInput` for an allocation naming a node that is not online or asking
    more than the node has free.
    """
    by_id = {n.node_id: n for n in nodes}
    if allocation is None:
        return {n.node_id: n.free_bytes for n in nodes}
    budgets: dict[str, int] = {}
    for node_id, nbytes in allocation.items():
        node = by_id.get(node_id)
        if node is None:
            raise InvalidInput(f"allocation names {node_id}, which is not an online node")
        if nbytes > node.free_bytes:
            raise InvalidInput(
                f"allocation asks {format_size(nbytes)} of {node.name}, which has "
                f"{format_size(node.free_bytes)} free"
            )
        budgets[node_id] = nbytes
    return budgets


async def check_source(path: Path) -> int:
    """Return the size of the file to upload; raise a one-line error when it is unusable."""
    try:
        st = await asyncio.to_thread(path.stat)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    except PermissionError:
        raise InvalidInput(f"{path}: permission denied") from None
    if stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{path}: not a regular file")
    return st.st_size


class _Acks:
    """Which holders acked which chunk, mirrored into the resume record."""

    def __init__(self, record: JsonLines, entries: list[dict[str, object]]) -> None:
        self._record = record
        self.by_chunk: dict[str, set[str]] = defaultdict(set)
        self.failed: set[str] = set()
        """holders that failed during this run: their acks no longer count (a holder that
        died after acking is not registered as one; its chunks are placed again)"""
        for e in entries:
            chunk, holder = e.get("chunk"), e.get("holder")
            if isinstance(chunk, str) and isinstance(holder, str):
                self.by_chunk[chunk].add(holder)

    def good(self, chunk_id: str) -> set[str]:
        """Return the holders that acked ``chunk_id`` and have not failed since."""
        return self.by_chunk[chunk_id] - self.failed

    async def add(self, chunk_id: str, holder: str) -> None:
        self.by_chunk[chunk_id].add(holder)
        await asyncio.to_thread(self._record.append, [{"chunk": chunk_id, "holder": holder}])


async def upload(ctx: NodeContext, req: UploadRequest, t: Transfer) -> TransferResult:
    """Run one upload to the end; return its result. Raises our errors (nothing half-registered)."""
    started = time.monotonic()
    path = Path(req.path)
    chunk_size = validate_chunk_size(req.chunk_size or ctx.chunk_size)
    size = await check_source(path)
    name = validate_name(req.name or path.name)
    me = ctx.identity.node_id

    # step 2: online nodes with free space (not this one)
    nodes = [n for n in await ctx.tracker.all_nodes(online=True) if n.node_id != me]
    by_id = {n.node_id: n for n in nodes}
    # step 3: the user's choice, checked against the file before anything is read or sent
    budgets = choose_budgets(nodes, req.allocation)
    plan = ChunkPlan.for_size(size, chunk_size)
    plan_placement([ChunkNeed(f"{s.index:064x}", s.length) for s in plan], budgets, req.replicas)

    # steps 4-5: hash and chunk once into this node's store (encrypted: hash first, for the key)
    t.move("hashing", f"hashing {name}")
    encrypt = ctx.encrypt if req.encrypt is None else req.encrypt
    t.set_total(2 * size if encrypt else size)
    key, keyed_sha = await _file_key(ctx, path, size, chunk_size, t) if encrypt else (None, "")
    manifest = await ingest_file(
        ctx.store,
        path,
        chunk_size=chunk_size,
        created=datetime.now(UTC),
        name=name,
        on_progress=t.advance,
        key=key,
    )
    if key is not None and sealing.unseal(key, manifest.sealed or "").sha256 != keyed_sha:
        # the key was chosen for other bytes: using it for these could reuse its nonces
        raise IntegrityError(f"{path}: changed while it was read (hashed twice, differently)")
    t.file_id = manifest.file_id
    existing = await _registered(ctx, manifest)
    if existing is not None:
        t.move("registering", "already registered at the tracker")
        return shown(_result_of(existing, path, started, by_id), manifest, key)

    record, entries = await asyncio.to_thread(
        JsonLines.open, ctx.data_dir / "uploads" / f"{manifest.file_id}.jsonl"
    )
    acks = _Acks(record, entries)
    try:
        await _place_all(ctx, t, manifest, budgets, by_id, req.replicas, acks)
        # steps 9-10: register with every ack in hand; the tracker's ack
        t.move("registering", "registering at the tracker")
        registration = _registration(ctx, manifest, req.replicas, acks)
        await ctx.tracker.register(registration)
    except BaseException:
        await asyncio.to_thread(record.close)
        raise
    await asyncio.to_thread(record.remove)

    addresses = {n.node_id: n.address for n in by_id.values()}
    good = {c: acks.good(c) for c in list(acks.by_chunk)}
    result = _result(manifest, path, started, good, by_id, addresses, req.replicas)
    return shown(result, manifest, key)


async def _file_key(
    ctx: NodeContext, path: Path, size: int, chunk_size: int, t: Transfer
) -> tuple[bytes, str]:
    """Return the key to encrypt ``path`` with, and the plaintext's SHA-256 it is kept under:
    the owner's key for this plaintext and chunk size, made on first use (a resumed or repeated
    upload encrypts to the same chunks)."""
    sha256 = await asyncio.to_thread(diskio.hash_file, path)  # one pass: only the hash is needed
    if sha256 is None:
        raise NotFound(f"{path}: no such file")
    t.advance(size)
    key = await asyncio.to_thread(load_or_create_file_key, ctx.data_dir, sha256, chunk_size)
    return key, sha256


async def _registered(ctx: NodeContext, manifest: Manifest) -> FileDetail | None:
    """Return the tracker's detail when these bytes are already registered by this node.

    Uploading the same file again (same bytes, name and chunk size) is a no-op that answers
    with the registration there is. Raises :class:`Conflict` when the same bytes are
    registered under another name or by another node (a file id names the bytes).
    """
    try:
        detail = await ctx.tracker.file(manifest.file_id)
    except NotFound:
        return None
    theirs = detail.manifest
    if detail.owner != ctx.identity.node_id:
        raise Conflict(
            f"these bytes are already shared as {theirs.name!r} (file id {theirs.file_id}) "
            f"by node {detail.owner}; download that one instead"
        )
    if (theirs.name, theirs.chunk_size) != (manifest.name, manifest.chunk_size):
        raise Conflict(
            f"you already shared these bytes as {theirs.name!r} with "
            f"{format_size(theirs.chunk_size)} chunks (file id {theirs.file_id})"
        )
    return detail


def _result_of(
    detail: FileDetail, path: Path, started: float, nodes: Mapping[str, NodeInfo]
) -> TransferResult:
    """Return the result of an upload that found its file already registered."""
    held: dict[str, set[str]] = defaultdict(set)
    addresses: dict[str, str] = {}
    for ch in detail.chunks:
        for h in ch.holders:
            if h.node_id != detail.owner:
                held[ch.chunk_id].add(h.node_id)
                addresses[h.node_id] = h.address
    return _result(
        detail.manifest, path, started, held, nodes, addresses, detail.replica_target - 1
    )


def _result(
    manifest: Manifest,
    path: Path,
    started: float,
    held: Mapping[str, set[str]],
    nodes: Mapping[str, NodeInfo],
    addresses: Mapping[str, str],
    replicas: int,
) -> TransferResult:
    """Return an upload's result: ``held`` maps each chunk id to the holders besides us."""
    sizes = _chunk_sizes(manifest)
    shares: dict[str, HolderShare] = {}
    for chunk_id, holders in held.items():
        for h in holders:
            if chunk_id not in sizes or h not in addresses:
                continue
            known = nodes.get(h)
            old = shares.get(h) or HolderShare(
                node_id=h,
                name=known.name if known else h,
                address=addresses[h],
                chunks=0,
                bytes=0,
            )
            shares[h] = old.model_copy(
                update={"chunks": old.chunks + 1, "bytes": old.bytes + sizes[chunk_id]}
            )
    holders = sorted(shares.values(), key=lambda s: s.name)
    return transfer_result(
        manifest, str(path), time.monotonic() - started, holders, replicas, sha256_checked=True
    )


def _chunk_sizes(manifest: Manifest) -> dict[str, int]:
    plan = ChunkPlan.for_size(manifest.size, manifest.chunk_size)
    return {manifest.chunk_ids[s.index]: s.length for s in plan}


def _registration(
    ctx: NodeContext, manifest: Manifest, replicas: int, acks: _Acks
) -> FileRegistration:
    me = ctx.identity.node_id
    sizes = _chunk_sizes(manifest)
    placement = []
    chunk_acks = []
    for chunk_id, size in sizes.items():
        holders = sorted(acks.good(chunk_id))[:replicas]
        placement.append(Placement(chunk_id=chunk_id, holders=[me, *holders]))
        chunk_acks.append(ChunkAck(node_id=me, chunk_id=chunk_id, size=size))
        chunk_acks.extend(ChunkAck(node_id=h, chunk_id=chunk_id, size=size) for h in holders)
    return FileRegistration(
        manifest=manifest,
        owner=me,
        replica_target=replicas + 1,
        placement=placement,
        acks=chunk_acks,
    )


async def _place_all(
    ctx: NodeContext,
    t: Transfer,
    manifest: Manifest,
    budgets: dict[str, int],
    nodes: dict[str, NodeInfo],
    replicas: int,
    acks: _Acks,
) -> None:
    """Reserve and push until every chunk has ``replicas`` acks, re-placing around failures."""
    sizes = _chunk_sizes(manifest)
    failed = acks.failed
    total_copies = replicas * sum(sizes.values())
    for _round in range(len(nodes) + 1):
        missing = {c: replicas - len(acks.good(c)) for c in sizes}
        missing = {c: n for c, n in missing.items() if n > 0}
        done = total_copies - sum(n * sizes[c] for c, n in missing.items())
        if not missing:
            return
        t.move("reserving", "asking holders for space")
        t.set_total(total_copies, done)
        spent: dict[str, int] = defaultdict(int)
        for chunk_id in sizes:
            for h in acks.good(chunk_id):
                spent[h] += sizes[chunk_id]
        left = {h: b - spent[h] for h, b in budgets.items() if h not in failed}
        try:
            placement = plan_placement(
                [ChunkNeed(c, sizes[c], copies=n) for c, n in missing.items()],
                left,
                replicas,
                exclude={c: acks.by_chunk[c] | failed for c in missing},
            )
        except PlacementError as exc:
            lost = f" after losing {', '.join(sorted(failed))}" if failed else ""
            raise PlacementError(f"cannot place the remaining chunks{lost}: {exc.detail}") from None
        per_holder: dict[str, int] = defaultdict(int)
        for chunk_id, holders in placement.items():
            for h in holders:
                per_holder[h] += sizes[chunk_id]
        grants = await _reserve(ctx, manifest.file_id, per_holder, nodes, failed, t)
        try:
            if len(grants) < len(per_holder):
                continue  # someone refused: plan again without them
            t.move("pushing", f"sending chunks to {len(grants)} holders")
            pairs = [(c, h) for c, hs in placement.items() for h in hs]
            await _push(ctx, t, pairs, grants, nodes, sizes, acks, failed)
        finally:
            await _release(ctx, grants, nodes)
    raise Unavailable("upload gave up: holders kept failing (see the log)")


async def _reserve(
    ctx: NodeContext,
    upload_id: str,
    per_holder: Mapping[str, int],
    nodes: Mapping[str, NodeInfo],
    failed: set[str],
    t: Transfer,
) -> dict[str, ReservationGrant]:
    grants: dict[str, ReservationGrant] = {}

    async def one(holder: str, nbytes: int) -> None:
        node = nodes[holder]
        body = ReservationRequest(
            requester=ctx.identity.node_id,
            upload_id=upload_id,
            nbytes=nbytes,
            ttl=ctx.reservation_ttl,
        )
        try:
            grants[holder] = await ctx.peers.reserve(node.address, body)
        except HOLDER_FAULTS as exc:
            failed.add(holder)
            log.warning("holder %s refused a reservation: %s", node.name, exc.detail)
            t.note(f"{node.name} refused space ({exc.detail}); choosing again")

    async with asyncio.TaskGroup() as tg:
        for holder, nbytes in per_holder.items():
            tg.create_task(one(holder, nbytes))
    return grants


async def _release(
    ctx: NodeContext, grants: Mapping[str, ReservationGrant], nodes: Mapping[str, NodeInfo]
) -> None:
    async def one(holder: str, grant: ReservationGrant) -> None:
        try:
            await ctx.peers.release(nodes[holder].address, grant.reservation_id)
        except P2PShareError as exc:  # it expires by itself anyway
            log.info("could not release reservation on %s: %s", nodes[holder].name, exc.detail)

    await asyncio.shield(asyncio.gather(*(one(h, g) for h, g in grants.items())))


async def _push(
    ctx: NodeContext,
    t: Transfer,
    pairs: list[tuple[str, str]],
    grants: Mapping[str, ReservationGrant],
    nodes: Mapping[str, NodeInfo],
    sizes: Mapping[str, int],
    acks: _Acks,
    failed: set[str],
) -> None:
    """Push every (chunk, holder) pair, ``total`` at once and ``per_holder`` per holder."""
    queues: dict[str, asyncio.Queue[str]] = defaultdict(asyncio.Queue)
    for chunk_id, holder in pairs:
        queues[holder].put_nowait(chunk_id)
    slots = asyncio.Semaphore(ctx.total)

    async def worker(holder: str) -> None:
        node = nodes[holder]
        queue = queues[holder]
        while not queue.empty() and holder not in failed:
            chunk_id = queue.get_nowait()
            async with slots:
                if holder in failed:
                    return
                try:
                    # streamed from the chunk file: a piece at a time in memory, not the chunk
                    async with await ctx.store.get(chunk_id) as reader:
                        await ctx.peers.put_chunk(
                            node.address,
                            chunk_id,
                            reader,
                            grants[holder].reservation_id,
                            size=reader.size,
                        )
                except HOLDER_FAULTS as exc:
                    failed.add(holder)
                    log.warning("holder %s failed during the upload: %s", node.name, exc.detail)
                    t.note(f"lost {node.name} ({exc.detail}); placing its chunks elsewhere")
                    return
            await acks.add(chunk_id, holder)
            t.advance(sizes[chunk_id])

    async with asyncio.TaskGroup() as tg:
        for holder in queues:
            for _ in range(ctx.per_holder):
                tg.create_task(worker(holder))
