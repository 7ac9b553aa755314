"""Every query of the tracker, and the one owner check (:func:`ensure_owner`).

Methods that change something run in one write transaction and return only after it is
committed: what they return is an ack (design.md §2, upload step 10; download step 8). Reads
run in one read transaction, so the queries of one answer see the same snapshot. Nothing here
is SQLite-only: upserts go through :func:`_insert`, which picks the dialect's ``INSERT ... ON
CONFLICT``.

Who is online comes from :class:`~p2pshare.tracker.liveness.Liveness` (memory), not from the
``nodes.status`` column, except where a query must filter many rows in SQL (``GET /v1/nodes``
without ``online=true``, the under-replicated count of ``GET /v1/stats``): there the column,
written behind within one flush period, stands in.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, delete, func, literal, null, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, undefer

from p2pshare.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    UnknownNode,
)
from p2pshare.core.manifest import Manifest
from p2pshare.core.messages import (
    LISTED_HOLDERS,
    NEW_HOLDERS_LIMIT,
    ChunkHolders,
    DownloadReport,
    FileDetail,
    FileRegistration,
    FileSummary,
    Holder,
    LeecherUpdate,
    NewHolder,
    NewHolders,
    NodeAnnounce,
    NodeInfo,
    Page,
    Receipt,
    RegistrationAck,
    ReplicaReport,
    Stats,
)
from p2pshare.tracker.cache import DetailCache, FileSnapshot
from p2pshare.tracker.clock import Clock
from p2pshare.tracker.db import Database
from p2pshare.tracker.liveness import FlushBatch, Liveness, holder_of, reserved_bytes
from p2pshare.tracker.models import Base, Chunk, Event, File, Leecher, Node, Replica

log = logging.getLogger(__name__)

AVAILABLE = "available"
AUDIT_KINDS = ("audit-passed", "audit-failed")
DELETED = "deleted"
IN_BATCH = 500
"""Most values bound in one ``IN (...)`` list (well under SQLite's and asyncpg's limits)."""
HOLDERS_OVERLAP = timedelta(seconds=10)
"""How far before a read its ``as_of`` lies: a replica written by a transaction that began
before the read and ended after it has a ``since`` before the read, and is still listed by
the next ``holders_since`` (a download's next look meets it again, and ignores it)."""

_NODE_COLUMNS = (
    Node.node_id,
    Node.name,
    Node.address,
    Node.offered_bytes,
    Node.used_bytes,
    Node.free_bytes,
    Node.last_seen,
)


def ensure_owner(file: File, node_id: str) -> None:
    """Raise :class:`Forbidden` unless ``node_id`` owns ``file``.

    The one owner check of the tracker. Today the caller's node id is taken at its word;
    with the security issue it becomes the id proven by the request's signature, here.
    """
    if file.owner_id != node_id:
        raise Forbidden(f"node {node_id} does not own file {file.file_id}")


def _insert(session: AsyncSession, model: type[Base]) -> Any:
    """Return the dialect's INSERT for ``model``, which has ``on_conflict_do_*``."""
    name = session.bind.dialect.name
    if name == "sqlite":
        return sqlite.insert(model)
    if name == "postgresql":
        return postgresql.insert(model)
    raise NotImplementedError(f"no upsert for database {name!r}")  # pragma: no cover


def _batches(items: Sequence[str], size: int = IN_BATCH) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _node_info_from_row(row: Row[Any], online: bool) -> NodeInfo:
    return NodeInfo(
        node_id=row.node_id,
        name=row.name,
        address=row.address,
        offered_bytes=row.offered_bytes,
        used_bytes=row.used_bytes,
        free_bytes=row.free_bytes,
        last_seen=row.last_seen,
        online=online,
    )


class Repository:
    """The tracker's data: nodes, files, chunks, replicas, leechers and events."""

    def __init__(
        self, db: Database, liveness: Liveness, clock: Clock, cache: DetailCache | None = None
    ) -> None:
        self.db = db
        self.liveness = liveness
        self.clock = clock
        self.cache = cache if cache is not None else DetailCache(clock)

    # --- nodes ----------------------------------------------------------------------------

    def node_info(self, row: Row[Any] | None, node_id: str) -> NodeInfo | None:
        """Return what is known of ``node_id``: its last announce if any, else its ``row``."""
        state = self.liveness.get(node_id)
        online = self.liveness.is_online(node_id)
        if state is not None:
            return state.info(online=online)
        return None if row is None else _node_info_from_row(row, online)

    def _holder_views(self, row: Row[Any], node_id: str) -> tuple[NodeInfo, Holder]:
        """Return what is known of ``node_id`` as :meth:`node_info` does, and as a holder."""
        state = self.liveness.get(node_id)
        online = self.liveness.is_online(node_id)
        if state is not None:
            return state.info(online=online), state.holder(online=online)
        info = _node_info_from_row(row, online)
        return info, holder_of(info)

    async def save_node(self, a: NodeAnnounce) -> None:
        """Insert or update the row of the announcing node now (it is new or changed)."""
        now = self.clock.now()
        values = {
            "node_id": a.node_id,
            "name": a.name,
            "address": a.address,
            "offered_bytes": a.offered_bytes,
            "used_bytes": a.used_bytes,
            "reserved_bytes": reserved_bytes(a),
            "free_bytes": a.free_bytes,
            "first_seen": now,
            "last_seen": now,
            "status": "online",
        }
        async with self.db.write() as s:
            stmt = _insert(s, Node).values(values)
            changed = {k: stmt.excluded[k] for k in values if k not in {"node_id", "first_seen"}}
            await s.execute(stmt.on_conflict_do_update(index_elements=["node_id"], set_=changed))

    async def write_liveness(self, batch: FlushBatch) -> None:
        """Write a liveness batch in one transaction (see :mod:`.liveness`)."""
        async with self.db.write() as s:
            if batch.seen:
                await s.execute(update(Node), batch.seen)
            for ids in _batches(batch.offline):
                await s.execute(update(Node).where(Node.node_id.in_(ids)).values(status="offline"))
        log.debug("flushed %d announces, %d nodes offline", len(batch.seen), len(batch.offline))

    async def mark_all_offline(self) -> None:
        """Set every node's status to offline (at start: nobody has announced yet)."""
        async with self.db.write() as s:
            await s.execute(update(Node).where(Node.status != "offline").values(status="offline"))

    async def list_nodes(
        self, *, online: bool | None, min_free: int, offset: int, limit: int
    ) -> Page[NodeInfo]:
        """Return nodes with at least ``min_free`` free bytes, most free space first.

        ``online=True`` reads the in-memory map only; otherwise the ``nodes`` table is paged
        (ordered by the free space last written behind) and each row is overlaid with the
        node's latest announce.
        """
        if online:
            states = [s for s in self.liveness.online() if s.announce.free_bytes >= min_free]
            states.sort(key=lambda s: (-s.announce.free_bytes, s.announce.node_id))
            items = [s.info(online=True) for s in states[offset : offset + limit]]
            return Page[NodeInfo](items=items, total=len(states), offset=offset, limit=limit)
        conds = [Node.free_bytes >= min_free]
        if online is False:
            conds.append(Node.status == "offline")
        async with self.db.read() as s:
            total = await s.scalar(select(func.count()).select_from(Node).where(*conds))
            rows = (
                await s.execute(
                    select(*_NODE_COLUMNS)
                    .where(*conds)
                    .order_by(Node.free_bytes.desc(), Node.node_id)
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
        items = [info for r in rows if (info := self.node_info(r, r.node_id)) is not None]
        if online is False:
            items = [i for i in items if not i.online]
        return Page[NodeInfo](items=items, total=total or 0, offset=offset, limit=limit)

    async def _require_nodes(self, s: AsyncSession, node_ids: Collection[str], role: str) -> None:
        """Raise :class:`UnknownNode` naming the first of ``node_ids`` that never announced."""
        wanted = sorted(set(node_ids))
        known: set[str] = set()
        for ids in _batches(wanted):
            known.update((await s.scalars(select(Node.node_id).where(Node.node_id.in_(ids)))).all())
        missing = [n for n in wanted if n not in known]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UnknownNode(
                f"{role} {missing[0]}{more} is unknown to the tracker; a node must announce "
                "itself before it is named"
            )

    # --- files ----------------------------------------------------------------------------

    async def register_file(self, reg: FileRegistration) -> tuple[RegistrationAck, bool]:
        """Register an uploaded file: file, chunks, replicas and an event in one transaction.

        Returns the ack once committed, and True when this call registered the file. The same
        file, owner and manifest again returns the first ack and False, and writes nothing. A
        withdrawn file's id may be registered again, by any node, with a new manifest.
        Raises :class:`InvalidManifest` when the file id does not verify, :class:`InvalidInput`
        for an ack that disagrees with the manifest, :class:`UnknownNode` for an owner or holder
        that never announced, and :class:`Conflict` when the file id is available with another
        owner or manifest.
        """
        m = reg.manifest
        m.verify()
        _check_acks(reg)
        for attempt in range(2):
            try:
                return await self._register(reg)
            except DBIntegrityError:
                # Two registrations of one new file raced; the loser re-reads and answers
                # as a repeat (or a conflict).
                if attempt:
                    raise
                log.info("registration of %s raced another; retrying", m.file_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _register(self, reg: FileRegistration) -> tuple[RegistrationAck, bool]:
        m = reg.manifest
        manifest_json = m.canonical_json().decode("utf-8")
        now = self.clock.now()
        async with self.db.write() as s:
            existing = await s.get(File, m.file_id, options=[undefer(File.manifest)])
            if existing is not None and existing.state == AVAILABLE:
                if existing.owner_id != reg.owner:
                    raise Conflict(f"file {m.file_id} is registered by another node")
                if existing.manifest != manifest_json:
                    raise Conflict(f"file {m.file_id} is registered with a different manifest")
                if existing.state == AVAILABLE:
                    ack = RegistrationAck(
                        file_id=existing.file_id, state=AVAILABLE, registered_at=existing.created
                    )
                    return ack, False
            holders = {n for p in reg.placement for n in p.holders}
            await self._require_nodes(s, [reg.owner], "owner")
            await self._require_nodes(s, holders, "holder")
            if existing is None:
                s.add(
                    File(
                        file_id=m.file_id,
                        name=m.name,
                        size=m.size,
                        chunk_size=m.chunk_size,
                        chunk_count=len(m.chunk_ids),
                        manifest=manifest_json,
                        owner_id=reg.owner,
                        replica_target=reg.replica_target,
                        state=AVAILABLE,
                        created=now,
                        deleted_at=None,
                        downloads=0,
                    )
                )
                await s.flush()
                if m.chunk_ids:
                    await s.execute(
                        _insert(s, Chunk),
                        [
                            {"file_id": m.file_id, "index": i, "chunk_id": c}
                            for i, c in enumerate(m.chunk_ids)
                        ],
                    )
            else:  # withdrawn earlier: the same bytes (so the same chunks), registered anew
                existing.state = AVAILABLE
                existing.deleted_at = None
                existing.created = now
                existing.replica_target = reg.replica_target
                existing.owner_id = reg.owner
                existing.manifest = manifest_json
                existing.name = m.name
            pairs = {(p.chunk_id, n) for p in reg.placement for n in p.holders}
            await self._hold(s, pairs, now)
            s.add(
                Event(
                    at=now,
                    kind="file-registered",
                    file_id=m.file_id,
                    node_id=reg.owner,
                    nbytes=m.size,
                    detail=f"{len(m.chunk_ids)} chunks, {len(pairs)} replicas acked",
                )
            )
            touched = await self._sharing_chunks(s, m.file_id)
        self.cache.invalidate(touched)
        log.info("registered file %s (%s, %d chunks)", m.file_id, m.name, len(m.chunk_ids))
        return RegistrationAck(file_id=m.file_id, state=AVAILABLE, registered_at=now), True

    async def _hold(
        self, s: AsyncSession, pairs: Collection[tuple[str, str]], now: datetime
    ) -> None:
        """Upsert replica rows: each (chunk id, node id) is held and was just verified."""
        if not pairs:
            return
        stmt = _insert(s, Replica)
        stmt = stmt.on_conflict_do_update(
            index_elements=["chunk_id", "node_id"],
            set_={"verified_ok": True, "last_verified": stmt.excluded.last_verified},
        )
        rows = [
            {"chunk_id": c, "node_id": n, "since": now, "verified_ok": True, "last_verified": now}
            for c, n in sorted(pairs)
        ]
        await s.execute(stmt, rows)

    async def _sharing_chunks(self, s: AsyncSession, file_id: str) -> set[str]:
        """Return ``file_id`` and every file that has a chunk in common with it.

        A replica is of a chunk id, not of a file: a change to one file's replicas changes
        every file that contains those chunks, and their cached details must go.
        """
        mine = aliased(Chunk)
        others = await s.scalars(
            select(Chunk.file_id)
            .where(Chunk.chunk_id.in_(select(mine.chunk_id).where(mine.file_id == file_id)))
            .distinct()
        )
        return {file_id, *others}

    async def _require_available(self, s: AsyncSession, file_id: str) -> None:
        """Raise :class:`NotFound` unless ``file_id`` is registered and not withdrawn."""
        state = await s.scalar(select(File.state).where(File.file_id == file_id))
        if state is None:
            raise NotFound(f"no file {file_id}")
        if state != AVAILABLE:
            raise NotFound(f"file {file_id} was withdrawn by its owner")

    async def list_files(
        self, *, name: str | None, include_deleted: bool, offset: int, limit: int
    ) -> Page[FileSummary]:
        """Return files, newest first, whose name contains ``name`` (case-insensitive)."""
        conds = []
        if not include_deleted:
            conds.append(File.state == AVAILABLE)
        if name:
            conds.append(func.lower(File.name).contains(name.lower(), autoescape=True))
        cols = (
            File.file_id,
            File.name,
            File.size,
            File.chunk_count,
            File.owner_id,
            File.state,
            File.created,
            File.downloads,
        )
        async with self.db.read() as s:
            total = await s.scalar(select(func.count()).select_from(File).where(*conds))
            rows = (
                await s.execute(
                    select(*cols)
                    .where(*conds)
                    .order_by(File.created.desc(), File.file_id)
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
        items = [
            FileSummary(
                file_id=r.file_id,
                name=r.name,
                size=r.size,
                chunks=r.chunk_count,
                owner=r.owner_id,
                state=r.state,
                created=r.created,
                downloads=r.downloads,
            )
            for r in rows
        ]
        return Page[FileSummary](items=items, total=total or 0, offset=offset, limit=limit)

    async def file_detail(self, file_id: str) -> FileDetail:
        """Return the manifest of ``file_id`` and where each chunk is, online holders first.

        The rows come from the :class:`~p2pshare.tracker.cache.DetailCache` or from three
        queries, whatever the file's size; who is online comes from liveness. Raises
        :class:`NotFound` for an unknown or withdrawn file.
        """
        snap = await self.cache.get(file_id, lambda: self._load_snapshot(file_id))
        return self._detail_of(snap)

    async def _load_snapshot(self, file_id: str) -> FileSnapshot:
        """Read the rows behind a detail: two statements, not one transaction (see db.py).

        The file row and the holders may be a write apart; the answer is then as fresh as
        either, which a download copes with (it re-reads when holders fail).
        """
        read_at = self.clock.now()
        async with self.db.read_statements() as conn:
            file = (
                await conn.execute(
                    select(
                        File.state,
                        File.manifest,
                        File.owner_id,
                        File.replica_target,
                        File.created,
                        File.downloads,
                    ).where(File.file_id == file_id)
                )
            ).one_or_none()
            if file is None:
                raise NotFound(f"no file {file_id}")
            if file.state != AVAILABLE:
                raise NotFound(f"file {file_id} was withdrawn by its owner")
            holders = (
                select(literal(True).label("holds"), Replica.chunk_id, *_NODE_COLUMNS)
                .join(Node, Node.node_id == Replica.node_id)
                .where(
                    Replica.chunk_id.in_(select(Chunk.chunk_id).where(Chunk.file_id == file_id)),
                    Replica.verified_ok.is_(True),
                )
            )
            leechers = (
                select(literal(False).label("holds"), null().label("chunk_id"), *_NODE_COLUMNS)
                .join(Leecher, Leecher.node_id == Node.node_id)
                .where(Leecher.file_id == file_id, Leecher.active.is_(True))
            )
            rows = (await conn.execute(union_all(holders, leechers))).all()
            last_audit = await conn.scalar(
                select(func.max(Event.at)).where(
                    Event.file_id == file_id, Event.kind.in_(AUDIT_KINDS)
                )
            )
        return FileSnapshot(
            manifest=Manifest.model_validate_json(file.manifest),
            owner=file.owner_id,
            replica_target=file.replica_target,
            created=file.created,
            downloads=file.downloads,
            held=tuple(r for r in rows if r.holds),
            leeching=tuple(r for r in rows if not r.holds),
            last_audit=last_audit,
            read_at=read_at,
        )

    async def holders_since(self, file_id: str, since: datetime) -> NewHolders:
        """Return the verified replicas of ``file_id``'s chunks written at or after ``since``
        (at most :data:`NEW_HOLDERS_LIMIT`, the oldest first), with who is online as of now.

        One indexed read per chunk of the file in the database, not a whole detail built in
        Python: what a download asks every few seconds for new sources. Raises
        :class:`NotFound` for an unknown or withdrawn file.
        """
        read_at = self.clock.now()
        async with self.db.read_statements() as conn:
            state = await conn.scalar(select(File.state).where(File.file_id == file_id))
            if state is None:
                raise NotFound(f"no file {file_id}")
            if state != AVAILABLE:
                raise NotFound(f"file {file_id} was withdrawn by its owner")
            rows = (
                await conn.execute(
                    select(Replica.chunk_id, Replica.since, *_NODE_COLUMNS)
                    .join(Node, Node.node_id == Replica.node_id)
                    .where(
                        Replica.chunk_id.in_(
                            select(Chunk.chunk_id).where(Chunk.file_id == file_id)
                        ),
                        Replica.verified_ok.is_(True),
                        Replica.since >= since,
                    )
                    .order_by(Replica.since)
                    .limit(NEW_HOLDERS_LIMIT + 1)
                )
            ).all()
        as_of = read_at - HOLDERS_OVERLAP
        if len(rows) > NEW_HOLDERS_LIMIT:
            # the rest from the first one left out (those written at its very instant with
            # it: they are listed again, the answer's holders repeated are ignored)
            as_of = rows[NEW_HOLDERS_LIMIT].since
            if as_of <= rows[0].since:  # all of one instant: its rest is skipped, or no answer
                as_of += timedelta(microseconds=1)  # would ever move past it
            rows = rows[:NEW_HOLDERS_LIMIT]
        holders = [
            NewHolder(chunk_id=r.chunk_id, holder=self._holder_views(r, r.node_id)[1]) for r in rows
        ]
        return NewHolders(holders=holders, as_of=as_of)

    def _detail_of(self, snap: FileSnapshot) -> FileDetail:
        """Return the detail of a snapshot, with who is online as of now."""
        manifest = snap.manifest
        layout = snap.layout
        infos: dict[str, NodeInfo] = {}
        entries: dict[str, Holder] = {}
        for node_id, row in layout.rows.items():
            infos[node_id], entries[node_id] = self._holder_views(row, node_id)

        def online_first(info: NodeInfo) -> tuple[bool, str]:
            return (not info.online, info.node_id)

        per_chunk: dict[str, tuple[list[Holder], int, int]] = {}
        holders_online = sum(1 for info in infos.values() if info.online)  # rows: holders only
        for cid in set(manifest.chunk_ids):
            nodes = sorted((infos[n] for n in layout.holders[cid]), key=online_first)
            online = sum(1 for n in nodes if n.online)
            listed = nodes[:LISTED_HOLDERS]
            if online > LISTED_HOLDERS:  # a different sample for each asker spreads the load
                listed = sorted(random.sample(nodes[:online], LISTED_HOLDERS), key=online_first)
            holders = [entries[n.node_id] for n in listed]
            per_chunk[cid] = (holders, online, len(nodes))
        chunks = [
            ChunkHolders(
                index=i,
                chunk_id=cid,
                holders=per_chunk[cid][0],
                replicas_online=per_chunk[cid][1],
                holders_total=per_chunk[cid][2],
            )
            for i, cid in enumerate(manifest.chunk_ids)
        ]
        seeders = sorted((infos[n] for n in layout.complete), key=online_first)
        leechers = sorted(
            (i for r in snap.leeching if (i := self.node_info(r, r.node_id)) is not None),
            key=online_first,
        )
        return FileDetail(
            manifest=manifest,
            owner=snap.owner,
            state=AVAILABLE,
            replica_target=snap.replica_target,
            registered_at=snap.created,
            seeders=seeders,
            leechers=leechers,
            chunks=chunks,
            holders_online=holders_online,
            downloads=snap.downloads,
            last_audit=snap.last_audit,
            as_of=snap.read_at - HOLDERS_OVERLAP if snap.read_at is not None else None,
        )

    async def update_leecher(self, file_id: str, upd: LeecherUpdate) -> Receipt:
        """Record that a node started or stopped downloading ``file_id``; return the receipt."""
        now = self.clock.now()
        async with self.db.write() as s:
            await self._require_available(s, file_id)
            await self._require_nodes(s, [upd.node_id], "node")
            if upd.state == "started":
                stmt = _insert(s, Leecher).values(
                    file_id=file_id, node_id=upd.node_id, active=True, started=now, stopped=None
                )
                await s.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["file_id", "node_id"],
                        set_={"active": True, "started": now, "stopped": None},
                    )
                )
            else:
                await self._stop_leecher(s, file_id, upd.node_id, now)
            kind = f"leecher-{upd.state}"
            s.add(Event(at=now, kind=kind, file_id=file_id, node_id=upd.node_id))
        self.cache.invalidate([file_id])
        return Receipt(recorded=kind, at=now)

    async def _stop_leecher(
        self, s: AsyncSession, file_id: str, node_id: str, now: datetime
    ) -> None:
        await s.execute(
            update(Leecher)
            .where(Leecher.file_id == file_id, Leecher.node_id == node_id, Leecher.active.is_(True))
            .values(active=False, stopped=now)
        )

    async def report_replicas(self, file_id: str, rep: ReplicaReport) -> Receipt:
        """Record chunks of ``file_id`` that a node now holds or lost, and replicas others sent
        bad bytes for (no longer listed until re-reported held); return the receipt.

        Raises :class:`InvalidInput` for a chunk that is not part of the file or is reported
        both held and lost.
        """
        held, lost = set(rep.held), set(rep.lost)
        both = held & lost
        if both:
            raise InvalidInput(f"chunk {min(both)} is reported both held and lost")
        now = self.clock.now()
        async with self.db.write() as s:
            await self._require_available(s, file_id)
            await self._require_nodes(s, [rep.node_id], "node")
            bad = {(b.node_id, b.chunk_id) for b in rep.bad}
            named = sorted(held | lost | {c for _, c in bad})
            in_file: set[str] = set()
            for ids in _batches(named):
                in_file.update(
                    (
                        await s.scalars(
                            select(Chunk.chunk_id)
                            .where(Chunk.file_id == file_id, Chunk.chunk_id.in_(ids))
                            .distinct()
                        )
                    ).all()
                )
            strangers = [c for c in named if c not in in_file]
            if strangers:
                raise InvalidInput(f"chunk {strangers[0]} is not part of file {file_id}")
            await self._hold(s, {(c, rep.node_id) for c in held}, now)
            for ids in _batches(sorted(lost)):
                await s.execute(
                    delete(Replica).where(Replica.node_id == rep.node_id, Replica.chunk_id.in_(ids))
                )
            for holder, cid in sorted(bad):
                await s.execute(
                    update(Replica)
                    .where(Replica.node_id == holder, Replica.chunk_id == cid)
                    .values(verified_ok=False, last_verified=now)
                )
            s.add(
                Event(
                    at=now,
                    kind="replicas-reported",
                    file_id=file_id,
                    node_id=rep.node_id,
                    detail=f"held {len(held)}, lost {len(lost)}, bad {len(bad)}"
                    + "".join(f"; bad {c} on {h}" for h, c in sorted(bad)[:8]),
                )
            )
            touched = await self._sharing_chunks(s, file_id)
        self.cache.invalidate(touched)
        return Receipt(recorded="replicas-reported", at=now)

    async def report_download(self, file_id: str, rep: DownloadReport) -> Receipt:
        """Record a completed download (leecher) or bytes served (holder); return the receipt."""
        now = self.clock.now()
        async with self.db.write() as s:
            await self._require_available(s, file_id)
            await self._require_nodes(s, [rep.node_id], "node")
            if rep.role == "leecher":
                kind = "download-completed"
                await s.execute(
                    update(File).where(File.file_id == file_id).values(downloads=File.downloads + 1)
                )
                await self._stop_leecher(s, file_id, rep.node_id, now)
            else:
                kind = "bytes-served"
            s.add(
                Event(
                    at=now,
                    kind=kind,
                    file_id=file_id,
                    node_id=rep.node_id,
                    peer_id=rep.peer,
                    nbytes=rep.bytes,
                )
            )
        if rep.role == "leecher":
            self.cache.invalidate([file_id])
        return Receipt(recorded=kind, at=now)

    async def delete_file(self, file_id: str, node_id: str) -> Receipt:
        """Withdraw ``file_id`` on behalf of its owner ``node_id``; return the receipt.

        Idempotent: withdrawing a withdrawn file answers with the first receipt. The file's
        row, chunks and history stay; replicas stay too (other files may share the chunks).
        Raises :class:`NotFound` for an unknown file, :class:`Forbidden` for another node.
        """
        now = self.clock.now()
        async with self.db.write() as s:
            file = await s.get(File, file_id)
            if file is None:
                raise NotFound(f"no file {file_id}")
            ensure_owner(file, node_id)
            if file.state != DELETED:
                file.state = DELETED
                file.deleted_at = now
                await s.execute(
                    update(Leecher)
                    .where(Leecher.file_id == file_id, Leecher.active.is_(True))
                    .values(active=False, stopped=now)
                )
                s.add(Event(at=now, kind="file-deleted", file_id=file_id, node_id=node_id))
            at = file.deleted_at or now
        self.cache.invalidate([file_id])
        log.info("file %s withdrawn by %s", file_id, node_id)
        return Receipt(recorded="file-deleted", at=at)

    # --- repair ---------------------------------------------------------------------------

    async def chunks_held_by(self, node_id: str) -> list[str]:
        """Return the chunk ids ``node_id`` holds (a replica row, good or bad)."""
        async with self.db.read() as s:
            return list(
                (await s.scalars(select(Replica.chunk_id).where(Replica.node_id == node_id))).all()
            )

    async def chunk_ids_after(self, after: str, limit: int) -> list[str]:
        """Return up to ``limit`` distinct chunk ids of available files, in order, > ``after``."""
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Chunk.chunk_id)
                .join(File, File.file_id == Chunk.file_id)
                .where(File.state == AVAILABLE, Chunk.chunk_id > after)
                .group_by(Chunk.chunk_id)
                .order_by(Chunk.chunk_id)
                .limit(limit)
            )
            return list(rows.all())

    async def chunk_replicas(
        self, chunk_ids: Collection[str]
    ) -> dict[str, tuple[int, int, list[tuple[str, bool]]]]:
        """Return, per chunk id of an available file: (size, replica target, [(holder, good)]).

        The target is the highest of the files containing the chunk. Chunks of no available
        file are left out.
        """
        out: dict[str, tuple[int, int, list[tuple[str, bool]]]] = {}
        async with self.db.read() as s:
            for ids in _batches(sorted(chunk_ids)):
                rows = await s.execute(
                    select(
                        Chunk.chunk_id,
                        Chunk.index,
                        File.size,
                        File.chunk_size,
                        File.replica_target,
                    )
                    .join(File, File.file_id == Chunk.file_id)
                    .where(File.state == AVAILABLE, Chunk.chunk_id.in_(ids))
                )
                for cid, index, size, chunk_size, target in rows:
                    length = min(chunk_size, size - index * chunk_size)
                    old = out.get(cid)
                    out[cid] = (length, max(target, old[1] if old else 0), [])
                reps = await s.execute(
                    select(Replica.chunk_id, Replica.node_id, Replica.verified_ok).where(
                        Replica.chunk_id.in_(ids)
                    )
                )
                for cid, node_id, good in reps:
                    if cid in out:
                        out[cid][2].append((node_id, bool(good)))
        return out

    async def record_repair(self, chunk_id: str, source: str, target: str, task_id: str) -> Receipt:
        """Record that ``target`` now holds ``chunk_id``, copied from ``source``; the receipt."""
        now = self.clock.now()
        async with self.db.write() as s:
            await self._require_nodes(s, [source, target], "node")
            await self._hold(s, {(chunk_id, target)}, now)
            files = set(
                (
                    await s.scalars(
                        select(Chunk.file_id).where(Chunk.chunk_id == chunk_id).distinct()
                    )
                ).all()
            )
            s.add(
                Event(
                    at=now,
                    kind="chunk-repaired",
                    file_id=min(files) if files else None,
                    node_id=source,
                    peer_id=target,
                    detail=f"chunk {chunk_id} copied to {target} (task {task_id})",
                )
            )
        self.cache.invalidate(files)
        return Receipt(recorded="chunk-repaired", at=now)

    # --- reclaim --------------------------------------------------------------------------

    async def orphan_replicas(self, limit: int) -> list[tuple[str, str]]:
        """Return up to ``limit`` random (chunk id, holder) replicas of chunks that no
        available file contains any more (their holders may delete them)."""
        needed = (
            select(Chunk.chunk_id)
            .join(File, File.file_id == Chunk.file_id)
            .where(File.state == AVAILABLE)
        )
        async with self.db.read() as s:
            rows = await s.execute(
                select(Replica.chunk_id, Replica.node_id)
                .where(Replica.chunk_id.not_in(needed))
                .order_by(func.random())
                .limit(limit)
            )
            return [(c, n) for c, n in rows]

    async def forget_replicas(
        self, node_id: str, chunk_ids: Collection[str], kind: str = "chunks-reclaimed"
    ) -> Receipt:
        """Delete ``node_id``'s replica rows of ``chunk_ids`` (it deleted those chunks); return
        the receipt. A chunk some file needs again meanwhile is left to the repair desk."""
        now = self.clock.now()
        async with self.db.write() as s:
            await self._require_nodes(s, [node_id], "node")
            files: set[str] = set()
            for ids in _batches(sorted(set(chunk_ids))):
                await s.execute(
                    delete(Replica).where(Replica.node_id == node_id, Replica.chunk_id.in_(ids))
                )
                files.update(
                    (await s.scalars(select(Chunk.file_id).where(Chunk.chunk_id.in_(ids)))).all()
                )
            s.add(
                Event(
                    at=now,
                    kind=kind,
                    node_id=node_id,
                    detail=f"{len(chunk_ids)} chunks gone: " + ", ".join(sorted(chunk_ids)[:8]),
                )
            )
        self.cache.invalidate(files)
        return Receipt(recorded=kind, at=now)

    # --- audits ---------------------------------------------------------------------------

    async def random_replicas(self, limit: int) -> list[tuple[str, str]]:
        """Return up to ``limit`` random good replicas (chunk id, holder) of available files."""
        async with self.db.read() as s:
            rows = await s.execute(
                select(Replica.chunk_id, Replica.node_id)
                .where(
                    Replica.verified_ok.is_(True),
                    Replica.chunk_id.in_(
                        select(Chunk.chunk_id)
                        .join(File, File.file_id == Chunk.file_id)
                        .where(File.state == AVAILABLE)
                    ),
                )
                .order_by(func.random())
                .limit(limit)
            )
            return [(c, n) for c, n in rows]

    async def record_audit(
        self, chunk_id: str, holder: str, challenger: str, *, passed: bool, detail: str = ""
    ) -> Receipt:
        """Record an audit of ``holder``'s copy of ``chunk_id``: good, or bad (not listed and
        not counted until re-reported held); return the receipt."""
        now = self.clock.now()
        kind = "audit-passed" if passed else "audit-failed"
        async with self.db.write() as s:
            await s.execute(
                update(Replica)
                .where(Replica.chunk_id == chunk_id, Replica.node_id == holder)
                .values(verified_ok=passed, last_verified=now)
            )
            files = set(
                (
                    await s.scalars(
                        select(Chunk.file_id).where(Chunk.chunk_id == chunk_id).distinct()
                    )
                ).all()
            )
            for file_id in sorted(files):
                s.add(
                    Event(
                        at=now,
                        kind=kind,
                        file_id=file_id,
                        node_id=holder,
                        peer_id=challenger,
                        detail=f"chunk {chunk_id}" + (f": {detail}" if detail else ""),
                    )
                )
        self.cache.invalidate(files)
        return Receipt(recorded=kind, at=now)

    # --- the network at a glance ----------------------------------------------------------

    async def stats(self) -> Stats:
        """Return counts and capacity; see :class:`~p2pshare.core.messages.Stats`."""
        online = list(self.liveness.online())
        per_chunk = (
            select(Chunk.chunk_id, func.max(File.replica_target).label("target"))
            .join(File, File.file_id == Chunk.file_id)
            .where(File.state == AVAILABLE)
            .group_by(Chunk.chunk_id)
            .subquery()
        )
        online_holders = (
            select(func.count())
            .select_from(Replica)
            .join(Node, Node.node_id == Replica.node_id)
            .where(
                and_(
                    Replica.chunk_id == per_chunk.c.chunk_id,
                    Node.status == "online",
                    Replica.verified_ok.is_(True),
                )
            )
            .scalar_subquery()
        )
        async with self.db.read() as s:
            nodes_total = await s.scalar(select(func.count()).select_from(Node))
            files = await s.scalar(
                select(func.count()).select_from(File).where(File.state == AVAILABLE)
            )
            chunks = await s.scalar(select(func.count()).select_from(per_chunk))
            under = await s.scalar(
                select(func.count())
                .select_from(per_chunk)
                .where(online_holders < per_chunk.c.target)
            )
        return Stats(
            nodes_online=len(online),
            nodes_total=nodes_total or 0,
            capacity_bytes=sum(st.announce.offered_bytes for st in online),
            free_bytes=sum(st.announce.free_bytes for st in online),
            files=files or 0,
            chunks=chunks or 0,
            under_replicated=under or 0,
        )


def _check_acks(reg: FileRegistration) -> None:
    """Raise :class:`InvalidInput` for an ack of a chunk not in the file or of the wrong size."""
    m = reg.manifest
    sizes: dict[str, int] = {}
    last = len(m.chunk_ids) - 1
    for i, cid in enumerate(m.chunk_ids):
        sizes[cid] = m.size - i * m.chunk_size if i == last else m.chunk_size
    for ack in reg.acks:
        want = sizes.get(ack.chunk_id)
        if want is None:
            raise InvalidInput(
                f"ack from {ack.node_id} names chunk {ack.chunk_id}, not in the file"
            )
        if ack.size != want:
            raise InvalidInput(
                f"ack from {ack.node_id} says chunk {ack.chunk_id} has {ack.size} bytes; "
                f"the manifest says {want}"
            )
