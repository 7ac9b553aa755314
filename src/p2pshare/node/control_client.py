"""The local node's control API as typed calls, for the CLI: :class:`ControlClient`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from pydantic import TypeAdapter, ValidationError

from p2pshare.core.errors import RemoteError, Unavailable
from p2pshare.core.ids import validate_id
from p2pshare.core.messages import DrainStatus, FileDetail, FileSummary, NodeInfo, Page, Receipt
from p2pshare.core.node_messages import (
    DownloadRequest,
    NodeStatus,
    TransferEvent,
    TransferInfo,
    UploadRequest,
)
from p2pshare.node.http import TRANSFER_TIMEOUT, call, mapped_errors, raise_for_problem

MAX_EVENT_LINE = 1 << 20


class ControlClient:
    """Calls to the node whose control API is at ``base_url`` (loopback)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._where = f"node {self.base_url}"

    def _url(self, path: str) -> str:
        return f"{self.base_url}/v1/control{path}"

    async def status(self) -> NodeStatus:
        """Return the node's status; :class:`Unavailable` when no node answers there."""
        try:
            return await call(
                self._session, "GET", self._url("/status"), NodeStatus, where=self._where
            )
        except Unavailable as exc:
            raise Unavailable(
                f"{exc.detail}; is the node running? start one with 'p2pshare node'"
            ) from None

    async def peers(self) -> list[NodeInfo]:
        """Return the online nodes with free space (upload step 2)."""
        return await call(
            self._session,
            "GET",
            self._url("/peers"),
            TypeAdapter(list[NodeInfo]),
            where=self._where,
        )

    async def files(
        self, name: str | None = None, offset: int = 0, limit: int = 100
    ) -> Page[FileSummary]:
        """Return a page of the tracker's files."""
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
        """Return one file's detail."""
        validate_id(file_id, "file id")
        return await call(
            self._session, "GET", self._url(f"/files/{file_id}"), FileDetail, where=self._where
        )

    async def leave(self) -> DrainStatus:
        """Ask the node to leave the network gracefully."""
        return await call(
            self._session, "POST", self._url("/leave"), DrainStatus, where=self._where
        )

    async def leave_status(self) -> DrainStatus:
        """Return how far the node's leaving is."""
        return await call(self._session, "GET", self._url("/leave"), DrainStatus, where=self._where)

    async def delete_file(self, file_id: str) -> Receipt:
        """Withdraw a file this node owns; return the tracker's receipt."""
        validate_id(file_id, "file id")
        return await call(
            self._session, "DELETE", self._url(f"/files/{file_id}"), Receipt, where=self._where
        )

    async def start_upload(self, body: UploadRequest) -> TransferInfo:
        """Start an upload on the node."""
        return await call(
            self._session, "POST", self._url("/uploads"), TransferInfo, body=body, where=self._where
        )

    async def start_download(self, body: DownloadRequest) -> TransferInfo:
        """Start a download on the node."""
        return await call(
            self._session,
            "POST",
            self._url("/downloads"),
            TransferInfo,
            body=body,
            where=self._where,
        )

    async def transfers(self) -> list[TransferInfo]:
        """Return the node's transfers, newest first."""
        return await call(
            self._session,
            "GET",
            self._url("/transfers"),
            TypeAdapter(list[TransferInfo]),
            where=self._where,
        )

    async def cancel(self, transfer_id: str) -> TransferInfo:
        """Stop a transfer (it stays resumable)."""
        return await call(
            self._session,
            "DELETE",
            self._url(f"/transfers/{transfer_id}"),
            TransferInfo,
            where=self._where,
        )

    async def events(self, transfer_id: str) -> AsyncIterator[TransferEvent]:
        """Yield a transfer's progress events until its final one."""
        url = self._url(f"/transfers/{transfer_id}/events")
        async with (
            mapped_errors(self._where),
            self._session.get(url, timeout=TRANSFER_TIMEOUT) as resp,
        ):
            await raise_for_problem(resp, self._where)
            while True:
                line = await resp.content.readline()
                if not line:
                    return
                if len(line) > MAX_EVENT_LINE:
                    raise RemoteError(f"{self._where}: progress line too long")
                try:
                    yield TransferEvent.model_validate_json(line)
                except ValidationError as exc:
                    raise RemoteError(f"{self._where}: malformed progress line: {exc}") from None
