"""The local node's control API as typed calls, for the CLI: :class:`ControlClient`.

The control API is plain HTTP on loopback and a CLI command's calls come one after another, so
this client is the standard library's ``http.client``, one connection per call, not aiohttp:
a CLI does not import aiohttp at all (about 70 ms of CPU, a third of a download command's start
on the test machine; with three downloads started at once on its 2 cores, those starts delay
the transfers). Every call has a timeout; errors are the project's (``node.wire``).
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, TypeAdapter, ValidationError

from p2pshare.core.errors import InvalidInput, RemoteError, Unavailable
from p2pshare.core.ids import validate_id
from p2pshare.core.messages import (
    DrainStatus,
    FileDetail,
    FileSummary,
    Message,
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
from p2pshare.node.wire import (
    MAX_JSON_RESPONSE,
    PROBLEM_LIMIT,
    parse_answer,
    read_answer,
    wire_error,
)

CONNECT_TIMEOUT = 5.0
CALL_TIMEOUT = 15.0
"""Seconds of silence that end a call (its answer is small, or a file's detail)."""
EVENTS_TIMEOUT = 30.0
"""Seconds of silence that end a transfer's progress stream."""
MAX_EVENT_LINE = 1 << 20
NOT_RUNNING = "is the node running? start one with 'p2pshare node'"


class ControlClient:
    """Calls to the node whose control API is at ``base_url`` (``http://HOST:PORT``)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            parts = urlsplit(self.base_url)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme != "http" or not parts.hostname:
            raise InvalidInput(
                f"{base_url}: a node's control URL is http://HOST:PORT "
                "(its control API is plain HTTP on loopback)"
            )
        self._host = parts.hostname
        self._port = port or 80
        self._prefix = f"{parts.path.rstrip('/')}/v1/control"
        self._where = f"node {self.base_url}"

    def status(self) -> NodeStatus:
        """Return the node's status."""
        return self._call("GET", "/status", NodeStatus)

    def peers(self) -> list[NodeInfo]:
        """Return the online nodes with free space (upload step 2)."""
        return self._call("GET", "/peers", TypeAdapter(list[NodeInfo]))

    def files(
        self, name: str | None = None, offset: int = 0, limit: int = 100
    ) -> Page[FileSummary]:
        """Return a page of the tracker's files."""
        params: dict[str, str | int] = {"offset": offset, "limit": limit}
        if name:
            params["name"] = name
        return self._call("GET", f"/files?{urlencode(params)}", Page[FileSummary])

    def file(self, file_id: str) -> FileDetail:
        """Return one file's detail."""
        validate_id(file_id, "file id")
        return self._call("GET", f"/files/{file_id}", FileDetail)

    def leave(self) -> DrainStatus:
        """Ask the node to leave the network gracefully."""
        return self._call("POST", "/leave", DrainStatus)

    def leave_status(self) -> DrainStatus:
        """Return how far the node's leaving is."""
        return self._call("GET", "/leave", DrainStatus)

    def delete_file(self, file_id: str) -> Receipt:
        """Withdraw a file this node owns; return the tracker's receipt."""
        validate_id(file_id, "file id")
        return self._call("DELETE", f"/files/{file_id}", Receipt)

    def start_upload(self, body: UploadRequest) -> TransferInfo:
        """Start an upload on the node."""
        return self._call("POST", "/uploads", TransferInfo, body)

    def start_download(self, body: DownloadRequest) -> TransferInfo:
        """Start a download on the node."""
        return self._call("POST", "/downloads", TransferInfo, body)

    def transfers(self) -> list[TransferInfo]:
        """Return the node's transfers, newest first."""
        return self._call("GET", "/transfers", TypeAdapter(list[TransferInfo]))

    def cancel(self, transfer_id: str) -> TransferInfo:
        """Stop a transfer (it stays resumable)."""
        return self._call("DELETE", f"/transfers/{quote(transfer_id, safe='')}", TransferInfo)

    def events(self, transfer_id: str) -> Iterator[TransferEvent]:
        """Yield a transfer's progress events until its final one."""
        target = f"/transfers/{quote(transfer_id, safe='')}/events"
        conn, resp = self._open("GET", target, None, EVENTS_TIMEOUT)
        try:
            if resp.status >= 300:
                self._read(resp)  # raises the problem's error
            while True:
                try:
                    line = resp.readline(MAX_EVENT_LINE + 1)
                except BaseException as exc:
                    raise wire_error(exc, self._where) from None
                if not line:
                    return
                if len(line) > MAX_EVENT_LINE:
                    raise RemoteError(f"{self._where}: progress line too long")
                try:
                    yield TransferEvent.model_validate_json(line)
                except ValidationError as exc:
                    raise RemoteError(f"{self._where}: malformed progress line: {exc}") from None
        finally:
            conn.close()

    # -- internals ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        target: str,
        model: type[BaseModel] | TypeAdapter[Any],
        body: Message | None = None,
    ) -> Any:
        data = body.model_dump_json().encode() if body is not None else None
        conn, resp = self._open(method, target, data, CALL_TIMEOUT)
        try:
            raw = self._read(resp, MAX_JSON_RESPONSE)
        finally:
            conn.close()
        return parse_answer(raw, model, self._where)

    def _open(
        self, method: str, target: str, data: bytes | None, timeout: float
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            why = "no answer in time" if isinstance(exc, TimeoutError) else exc.strerror or exc
            raise Unavailable(f"{self._where}: cannot connect ({why}); {NOT_RUNNING}") from None
        try:
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
            # http.client sends the headers and the body in two writes: no Nagle wait between
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, self._prefix + target, body=data, headers=headers)
            return conn, conn.getresponse()
        except BaseException as exc:
            conn.close()
            raise wire_error(exc, self._where) from None

    def _read(self, resp: http.client.HTTPResponse, limit: int = PROBLEM_LIMIT) -> bytes:
        try:
            return read_answer(resp, self._where, limit)
        except BaseException as exc:
            raise wire_error(exc, self._where) from None
