"""The peer API, served to other nodes under ``/v1``:

- ``POST /v1/reservations``: promise space for an upload (upload step 6);
- ``PUT /v1/chunks/{chunk_id}?reservation=ID``: receive a chunk, verify, store, ack (step 8);
- ``GET``/``HEAD /v1/chunks/{chunk_id}``: serve a chunk (by ``sendfile`` where it can);
- ``POST /v1/acks``: a downloader's receipt (download step 6), reported on to the tracker;
- ``POST /v1/challenges``: an audit; answer HMAC-SHA256(key=nonce, the chunk's bytes).

Every route but the chunk GET takes only signed requests (:mod:`p2pshare.security.signing`):
a reservation is issued to the node that signed its request, and a push, or the release of a
reservation, is accepted only when signed by that same node. A push's signature covers its
body by the chunk id (the SHA-256 the store checks the bytes against).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from p2pshare.core.audit import ProofHasher
from p2pshare.core.deadlines import BODY_WINDOW
from p2pshare.core.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    P2PShareError,
    PayloadTooLarge,
    ReservationError,
    ReservationExpired,
    Unavailable,
)
from p2pshare.core.ids import validate_id
from p2pshare.core.node_messages import (
    AckReceipt,
    Challenge,
    ChallengeAnswer,
    ChunkReceipt,
    DownloadAck,
    ReservationGrant,
    ReservationRequest,
)
from p2pshare.core.sizes import format_size
from p2pshare.node.guard import body_pieces, body_timeout, streamed_body
from p2pshare.node.identity import NodeIdentity
from p2pshare.node.limits import RateLimiter
from p2pshare.node.problems import json_response, read_model
from p2pshare.node.zerocopy import SendStalled, SentCounts, send_file
from p2pshare.security.signing import HEADER, ReplayGuard, body_sha256, verify
from p2pshare.storage.chunkstore import ChunkReader
from p2pshare.storage.filestore import FileChunkStore

log = logging.getLogger(__name__)


STORE = web.AppKey("store", FileChunkStore)
UPLOAD_LIMIT = web.AppKey("upload_limit", RateLimiter)
"""Paces the bytes this node serves (optional: unlimited when absent)."""
DOWNLOAD_LIMIT = web.AppKey("download_limit", RateLimiter)
"""Paces the bytes pushed to this node (optional)."""
SERVING = web.AppKey("serving", asyncio.Semaphore)
"""Caps the chunk downloads served at once (optional); beyond it a fetch gets 503."""
IDENTITY = web.AppKey("identity", NodeIdentity)
REPLAYS = web.AppKey("replays", ReplayGuard)
"""The signed requests seen within the signature window (each is accepted once)."""
ON_ACK = web.AppKey("on_ack", Callable[[DownloadAck], None])
"""Called with each valid downloader ack (the holder's report to the tracker goes from there)."""
SENT = web.AppKey("sent", SentCounts)
"""Counts the chunk bodies served, by how they were sent (optional)."""

PIECE = 1 << 20


async def signer_of(request: web.Request, body_hash: str | None = None) -> str:
    """Return the node id that signed ``request``; raise :class:`Unauthenticated` unless the
    signature is valid, fresh and not seen before. ``body_hash`` defaults to the hash of the
    (already read) body."""
    if body_hash is None:
        body_hash = body_sha256(await request.read())
    now = time.time()
    header = verify(
        request.headers.get(HEADER), request.method, request.raw_path, body_hash, now=now
    )
    request.app[REPLAYS].check(header, now=now)
    return header.node_id


async def _owned_reservation(store: FileChunkStore, reservation_id: str, signer: str) -> None:
    """Raise :class:`Forbidden` unless ``reservation_id`` was issued to ``signer``."""
    reservation = await store.get_reservation(reservation_id)
    if reservation.upload_id.partition(":")[0] != signer:
        raise Forbidden(f"reservation {reservation_id} was not issued to node {signer}")


async def reserve(request: web.Request) -> web.Response:
    """Promise ``nbytes`` for ``upload_id`` until the ttl passes; 507 when space is short."""
    body = await read_model(request, ReservationRequest)
    signer = await signer_of(request)
    if body.requester != signer:
        raise Forbidden(f"requester {body.requester} is not the signer {signer}")
    store = request.app[STORE]
    r = await store.reserve(f"{body.requester}:{body.upload_id}", body.nbytes, body.ttl)
    grant = ReservationGrant(
        reservation_id=r.reservation_id,
        holder=request.app[IDENTITY].node_id,
        nbytes=r.nbytes,
        expires_at=datetime.fromtimestamp(r.expires_at, UTC),
    )
    return json_response(grant, status=201)


async def release(request: web.Request) -> web.Response:
    """End a reservation early (the upload finished or gave up); its unused bytes are free."""
    reservation_id = request.match_info["reservation_id"]
    if not 1 <= len(reservation_id) <= 64 or not reservation_id.isalnum():
        raise InvalidInput("malformed reservation id")
    signer = await signer_of(request)
    store = request.app[STORE]
    with contextlib.suppress(ReservationExpired):  # a lapsed one holds nothing any more
        await _owned_reservation(store, reservation_id, signer)
    await store.release(reservation_id)
    return web.Response(status=204)


@streamed_body
async def put_chunk(request: web.Request) -> web.Response:
    """Receive a chunk under a reservation; ack only once it is verified and durable."""
    store = request.app[STORE]
    chunk_id = validate_id(request.match_info["chunk_id"], "chunk id")
    reservation = request.query.get("reservation")
    if not reservation:
        raise InvalidInput("a chunk push needs ?reservation=ID (ask POST /v1/reservations first)")
    await _owned_reservation(store, reservation, await signer_of(request, chunk_id))
    length = request.content_length
    if length is None:
        raise InvalidInput("a chunk push needs a Content-Length")
    if length > store.max_chunk_size:
        raise PayloadTooLarge(
            f"chunk of {length} bytes is above the {store.max_chunk_size} this node accepts"
        )
    left = (await store.get_reservation(reservation)).remaining  # refused before reading
    if length > left:
        raise ReservationError(
            f"chunk of {length} bytes is above the {left} left in reservation {reservation}"
        )
    pieces = body_pieces(request, PIECE)  # each 64 KiB within body_timeout (guard.py)
    limit = request.app.get(DOWNLOAD_LIMIT)
    result = await store.put(
        chunk_id, limit.paced(pieces) if limit else pieces, reservation_id=reservation
    )
    receipt = ChunkReceipt(
        holder=request.app[IDENTITY].node_id,
        chunk_id=chunk_id,
        size=result.size,
        created=result.created,
    )
    return json_response(receipt, status=201 if result.created else 200)


async def get_chunk(request: web.Request) -> web.StreamResponse:
    """Serve a chunk's bytes: by ``sendfile`` from its chunk file on a plain connection
    (zerocopy.py), else through the process (TLS, a downloaded file read and checked on the
    way, an upload rate limit); 404 when absent, 503 when already serving as many as allowed.

    Once the head has gone no problem can follow it: a body that cannot be finished (the peer
    went or stalled, the bytes no longer match) is cut by closing the connection.
    """
    store = request.app[STORE]
    chunk_id = validate_id(request.match_info["chunk_id"], "chunk id")
    serving = request.app.get(SERVING)
    if serving is not None and serving.locked():
        raise Unavailable("this node is serving as many peers as it allows; ask another holder")
    async with serving if serving is not None else contextlib.nullcontext():
        try:
            reader = await store.get(chunk_id)
        except NotFound:
            raise NotFound(f"this node has no chunk {chunk_id}") from None
        async with reader:
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            resp.content_length = reader.size
            try:
                await resp.prepare(request)  # sent here, while this request holds its slot
                if request.method == "HEAD":
                    return resp
                await _send_body(request, resp, reader)
            except (OSError, P2PShareError) as exc:
                log.log(_cut_level(exc), "chunk %s to %s cut: %s", chunk_id, request.remote, exc)
                if request.transport is not None:
                    request.transport.abort()
                return resp
            await resp.write_eof()
    return resp


def _cut_level(exc: BaseException) -> int:
    """How loud a cut body is: a peer that closed (an endgame's loser does) is routine, a
    stalled one worth a line, bytes that could not be read a warning."""
    if isinstance(exc, SendStalled):
        return logging.INFO
    return logging.DEBUG if isinstance(exc, ConnectionError) else logging.WARNING


async def _send_body(request: web.Request, resp: web.StreamResponse, reader: ChunkReader) -> None:
    """Send ``reader``'s bytes after ``resp``'s head: zero-copy when the reader is a plain
    file and nothing paces the sending, else piece by piece (at the upload limit's pace)."""
    counts = request.app.get(SENT)
    limit = request.app.get(UPLOAD_LIMIT)
    timeout = body_timeout(request)
    paced = limit is not None and bool(limit.rate)
    fd = None if paced else reader.fileno()
    if fd is not None and await send_file(request.transport, fd, reader.size, idle_timeout=timeout):
        if counts is not None:
            counts.zero_copy += 1
        return
    pieces = limit.paced(reader) if paced and limit is not None else reader
    async for piece in pieces:
        # the peer takes each 64 KiB within body_timeout, as a body sent to this node must
        allowed = timeout * math.ceil(max(1, len(piece)) / BODY_WINDOW)
        try:
            async with asyncio.timeout(allowed):
                await resp.write(piece)
        except TimeoutError:
            raise SendStalled(
                f"the peer took less than {format_size(BODY_WINDOW)} per {timeout:g} s"
            ) from None
    if counts is not None:
        counts.copied += 1


async def ack(request: web.Request) -> web.Response:
    """Take a downloader's receipt for the bytes it received from this node."""
    body = await read_model(request, DownloadAck)
    signer = await signer_of(request)
    if body.downloader != signer:
        raise Forbidden(f"downloader {body.downloader} is not the signer {signer}")
    request.app[ON_ACK](body)
    return json_response(AckReceipt(holder=request.app[IDENTITY].node_id, recorded=True))


async def challenge(request: web.Request) -> web.Response:
    """Answer an audit from this node's copy of the chunk; 404 when it has none."""
    body = await read_model(request, Challenge)
    await signer_of(request)
    store = request.app[STORE]
    hasher = ProofHasher(body.nonce)
    async with await store.get(body.chunk_id) as reader:
        async for piece in reader:
            await asyncio.to_thread(hasher.update, piece)
    answer = ChallengeAnswer(
        holder=request.app[IDENTITY].node_id, chunk_id=body.chunk_id, mac=hasher.answer()
    )
    return json_response(answer)


def add_routes(app: web.Application) -> None:
    """Register the peer API's routes on ``app``."""
    app.router.add_post("/v1/reservations", reserve)
    app.router.add_delete("/v1/reservations/{reservation_id}", release)
    app.router.add_put("/v1/chunks/{chunk_id}", put_chunk)
    app.router.add_get("/v1/chunks/{chunk_id}", get_chunk)
    app.router.add_post("/v1/acks", ack)
    app.router.add_post("/v1/challenges", challenge)
