"""The tracker's API as typed calls: :class:`TrackerClient`. Bodies are the models of
:mod:`p2pshare.core.messages`; errors are the project's (see :mod:`p2pshare.node.http`).
"""

from __future__ import annotations

from datetime import datetime

import aiohttp

from p2pshare.core.ids import validate_id
from p2pshare.core.messages import (
    MAX_PAGE_SIZE,
    AnnounceAck,
    AuditReport,
    DownloadReport,
    DrainStatus,
    FileDetail,
    FileRegistration,
    FileSummary,
    LeecherUpdate,
    Message,
    NewHolders,
    NodeAnnounce,
    NodeInfo,
    Page,
    Receipt,
    ReclaimReport,
    RegistrationAck,
    RepairReport,
    ReplicaReport,
    Stats,
)
from p2pshare.node.http import M, call, url_of
from p2pshare.security.signing import Signer


class TrackerClient:
    """Calls to one tracker at ``base_url`` over a shared session (which the caller owns)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, signer: Signer | None = None
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._signer = signer
        self._where = f"tracker {self.base_url.partition('#')[0]}"

    def _url(self, path: str) -> str:
        return url_of(self.base_url, f"/v1{path}")

    async def announce(self, body: NodeAnnounce) -> AnnounceAck:
        """Say this node is online; return the heartbeat interval to keep."""
        return await self._post("/nodes/announce", body, AnnounceAck)

    async def nodes(
        self, *, online: bool = True, min_free: int = 0, offset: int = 0, limit: int = MAX_PAGE_SIZE
    ) -> Page[NodeInfo]:
        """Return one page of nodes, most free space first."""
        params = {
            "online": "true" if online else "false",
            "min_free": min_free,
            "offset": offset,
            "limit": limit,
        }
        return await call(
            self._session,
            "GET",
            self._url("/nodes"),
            Page[NodeInfo],
            params=params,
            where=self._where,
        )

    async def all_nodes(self, *, online: bool = True, min_free: int = 0) -> list[NodeInfo]:
        """Return every node matching, following pages (at most 100 pages)."""
        out: list[NodeInfo] = []
        for _ in range(100):
            page = await self.nodes(online=online, min_free=min_free, offset=len(out))
            out.extend(page.items)
            if not page.items or len(out) >= page.total:
                break
        return out

    async def register(self, body: FileRegistration) -> RegistrationAck:
        """Register an uploaded file (upload step 9); return the tracker's ack (step 10)."""
        return await self._post("/files", body, RegistrationAck)

    async def files(
        self, *, name: str | None = None, offset: int = 0, limit: int = 100
    ) -> Page[FileSummary]:
        """Return one page of files, optionally those whose name contains ``name``."""
        params: dict[str, str | int] = {"offset": offset, "limit": limit}
        if name:
            params["name"] = name
        return await call(
            self._session,
            "GET",
            self._url("/files"),
            Page[FileSummary],
            params=params,
            where=self._where,
        )

    async def file(self, file_id: str) -> FileDetail:
        """Return a file's manifest and where its chunks are (download steps 1-3)."""
        validate_id(file_id, "file id")
        return await call(
            self._session, "GET", self._url(f"/files/{file_id}"), FileDetail, where=self._where
        )

    async def holders_since(self, file_id: str, since: datetime) -> NewHolders:
        """Return the holders of ``file_id``'s chunks listed since ``since`` (the ``as_of`` of
        its detail or of the answer before): a download's look for new sources."""
        validate_id(file_id, "file id")
        return await call(
            self._session,
            "GET",
            self._url(f"/files/{file_id}/holders"),
            NewHolders,
            params={"since": since.isoformat()},
            where=self._where,
        )

    async def leecher(self, file_id: str, body: LeecherUpdate) -> Receipt:
        """Say this node starts or stops downloading ``file_id``."""
        return await self._post(f"/files/{validate_id(file_id, 'file id')}/leechers", body, Receipt)

    async def replicas(self, file_id: str, body: ReplicaReport) -> Receipt:
        """Report chunks of ``file_id`` this node now holds or lost."""
        return await self._post(f"/files/{validate_id(file_id, 'file id')}/replicas", body, Receipt)

    async def downloads(self, file_id: str, body: DownloadReport) -> Receipt:
        """Report a completed download (leecher) or bytes served (holder)."""
        return await self._post(
            f"/files/{validate_id(file_id, 'file id')}/downloads", body, Receipt
        )

    async def repair(self, body: RepairReport) -> Receipt:
        """Report how a repair task ended."""
        return await self._post("/repairs", body, Receipt)

    async def drain(self, node_id: str) -> DrainStatus:
        """Say this node is leaving: its chunks are to be copied elsewhere."""
        return await self._post(f"/nodes/{node_id}/drain", None, DrainStatus)

    async def offline(self, node_id: str) -> Receipt:
        """Say this node is stopping: offline until its next announce."""
        return await self._post(f"/nodes/{node_id}/offline", None, Receipt)

    async def drain_status(self, node_id: str) -> DrainStatus:
        """Return how many of this node's chunks still wait for a copy elsewhere."""
        return await call(
            self._session,
            "GET",
            self._url(f"/nodes/{node_id}/drain"),
            DrainStatus,
            where=self._where,
        )

    async def lost(self, body: ReclaimReport) -> Receipt:
        """Report chunks this node lost (quarantined by its integrity scan)."""
        return await self._post(f"/nodes/{body.node_id}/lost", body, Receipt)

    async def reclaimed(self, body: ReclaimReport) -> Receipt:
        """Confirm chunks deleted on the tracker's word."""
        return await self._post("/reclaims", body, Receipt)

    async def audit(self, body: AuditReport) -> Receipt:
        """Report how an audit this node made ended."""
        return await self._post("/audits", body, Receipt)

    async def stats(self) -> Stats:
        """Return the network at a glance."""
        return await call(self._session, "GET", self._url("/stats"), Stats, where=self._where)

    async def delete(self, file_id: str, owner: str) -> Receipt:
        """Withdraw ``file_id`` (only its owner may)."""
        return await call(
            self._session,
            "DELETE",
            self._url(f"/files/{validate_id(file_id, 'file id')}"),
            Receipt,
            params={"node_id": owner},
            where=self._where,
            signer=self._signer,
        )

    async def _post(self, path: str, body: Message | None, model: type[M]) -> M:
        """POST ``body`` (or nothing) to ``path``, signed by this node."""
        return await call(
            self._session,
            "POST",
            self._url(path),
            model,
            body=body,
            where=self._where,
            signer=self._signer,
        )
