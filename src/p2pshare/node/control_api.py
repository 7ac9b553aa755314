"""The local control API, served on loopback only, for the CLI (under ``/v1/control``):

- ``GET status``: this node; ``GET peers``: online nodes with free space (upload step 2);
- ``GET files``, ``GET files/{file_id}``: the tracker's catalogue, through this node;
  ``DELETE files/{file_id}``: withdraw a file this node owns;
- ``POST leave``: leave the network gracefully (``GET leave``: how far it is);
- ``POST uploads``, ``POST downloads``: start a transfer (answers at once with its id);
- ``GET transfers``, ``GET transfers/{id}/events`` (progress as JSON lines until it ends),
  ``DELETE transfers/{id}`` (cancel: the transfer stops and stays resumable).

The node room does not run transfers itself: it is handed a :class:`TransferService` (the
transfer room's manager) by whoever assembles the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web
from pydantic import TypeAdapter

from p2pshare.core.errors import InvalidInput
from p2pshare.core.ids import validate_id
from p2pshare.core.messages import (
    MAX_PAGE_SIZE,
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
    UploadRequest,
)
from p2pshare.node.problems import json_response, read_model

NDJSON = "application/x-ndjson"


class TransferService(Protocol):
    """What the control API needs from the process's transfer manager."""

    async def status(self) -> NodeStatus:
        """Return this node's status."""
        ...

    async def peers(self) -> list[NodeInfo]:
        """Return the online nodes with free space, other than this one, most free first."""
        ...

    async def files(self, name: str | None, offset: int, limit: int) -> Page[FileSummary]:
        """Return a page of the tracker's files."""
        ...

    async def file(self, file_id: str) -> FileDetail:
        """Return one file's detail from the tracker."""
        ...

    async def delete_file(self, file_id: str) -> Receipt:
        """Withdraw a file this node owns at the tracker; return the tracker's receipt."""
        ...

    async def leave(self) -> DrainStatus:
        """Start leaving: chunks are copied elsewhere, then the node stops."""
        ...

    async def leave_status(self) -> DrainStatus:
        """Return how many of this node's chunks still wait for a copy elsewhere."""
        ...

    async def start_upload(self, request: UploadRequest) -> TransferInfo:
        """Start an upload; raise for input refused before anything is sent."""
        ...

    async def start_download(self, request: DownloadRequest) -> TransferInfo:
        """Start a download; raise for input refused before anything is fetched."""
        ...

    def transfers(self) -> list[TransferInfo]:
        """Return every transfer of this node's life, newest first."""
        ...

    def events(self, transfer_id: str) -> AsyncIterator[TransferEvent]:
        """Yield progress events of a transfer until (and including) its final one."""
        ...

    async def cancel(self, transfer_id: str) -> TransferInfo:
        """Stop a running transfer (it stays resumable); return its info."""
        ...


SERVICE = web.AppKey("transfer_service", TransferService)
_INFOS = TypeAdapter(list[TransferInfo])
_NODES = TypeAdapter(list[NodeInfo])


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InvalidInput(f"query parameter {name} must be a whole number from {lo} to {hi}")
    return int(raw)


async def status(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].status())


async def peers(request: web.Request) -> web.Response:
    nodes = await request.app[SERVICE].peers()
    return web.Response(body=_NODES.dump_json(nodes), content_type="application/json")


async def files(request: web.Request) -> web.Response:
    offset = _int_param(request, "offset", 0, 0, 2**31)
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE_SIZE)
    name = request.query.get("name") or None
    return json_response(await request.app[SERVICE].files(name, offset, limit))


async def file(request: web.Request) -> web.Response:
    file_id = validate_id(request.match_info["file_id"], "file id")
    return json_response(await request.app[SERVICE].file(file_id))


async def delete_file(request: web.Request) -> web.Response:
    file_id = validate_id(request.match_info["file_id"], "file id")
    return json_response(await request.app[SERVICE].delete_file(file_id))


async def leave(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].leave(), status=202)


async def leave_status(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].leave_status())


async def start_upload(request: web.Request) -> web.Response:
    body = await read_model(request, UploadRequest)
    return json_response(await request.app[SERVICE].start_upload(body), status=202)


async def start_download(request: web.Request) -> web.Response:
    body = await read_model(request, DownloadRequest)
    return json_response(await request.app[SERVICE].start_download(body), status=202)


async def transfers(request: web.Request) -> web.Response:
    infos = request.app[SERVICE].transfers()
    return web.Response(body=_INFOS.dump_json(infos), content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    stream = request.app[SERVICE].events(request.match_info["transfer_id"])
    first = await anext(stream)  # NotFound surfaces here, before the 200 is sent
    resp = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
    await resp.prepare(request)
    await resp.write(first.model_dump_json().encode() + b"\n")
    async for event in stream:
        await resp.write(event.model_dump_json().encode() + b"\n")
    await resp.write_eof()
    return resp


async def cancel(request: web.Request) -> web.Response:
    info = await request.app[SERVICE].cancel(request.match_info["transfer_id"])
    return json_response(info)


def add_routes(app: web.Application) -> None:
    """Register the control API's routes on ``app`` (which must listen on loopback only)."""
    r = app.router
    r.add_get("/v1/control/status", status)
    r.add_get("/v1/control/peers", peers)
    r.add_get("/v1/control/files", files)
    r.add_get("/v1/control/files/{file_id}", file)
    r.add_delete("/v1/control/files/{file_id}", delete_file)
    r.add_post("/v1/control/leave", leave)
    r.add_get("/v1/control/leave", leave_status)
    r.add_post("/v1/control/uploads", start_upload)
    r.add_post("/v1/control/downloads", start_download)
    r.add_get("/v1/control/transfers", transfers)
    r.add_get("/v1/control/transfers/{transfer_id}/events", events)
    r.add_delete("/v1/control/transfers/{transfer_id}", cancel)
