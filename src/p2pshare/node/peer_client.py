"""Another node's peer API as typed calls: :class:`PeerClient`."""

from __future__ import annotations

import mmap

import aiohttp
from pydantic import ValidationError

from p2pshare.core.errors import RemoteError
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
from p2pshare.node.http import (
    call,
    mapped_errors,
    prepare,
    raise_for_problem,
    url_of,
)
from p2pshare.node.streams import Fetched, StreamPool
from p2pshare.security.signing import Signer
from p2pshare.storage.chunkstore import ChunkReader


class PeerClient:
    """Calls to other nodes' peer APIs over a shared session, chunk bodies over ``streams``
    (the caller owns both; the rate limits are the stream pool's).

    Requests that change something at the holder (reservations, pushes, acks, challenges) are
    signed by ``signer``; addresses carry the holder's certificate pin (:func:`url_of`).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        streams: StreamPool,
        *,
        signer: Signer | None = None,
    ) -> None:
        self._session = session
        self._streams = streams
        self._signer = signer

    async def reserve(self, address: str, body: ReservationRequest) -> ReservationGrant:
        """Ask the node at ``address`` for a reservation; raise QuotaExceeded when it is full."""
        return await call(
            self._session,
            "POST",
            url_of(address, "/v1/reservations"),
            ReservationGrant,
            body=body,
            where=_where(address),
            signer=self._signer,
        )

    async def release(self, address: str, reservation_id: str) -> None:
        """End a reservation at ``address`` early."""
        where = _where(address)
        req = prepare(
            "DELETE", url_of(address, f"/v1/reservations/{reservation_id}"), signer=self._signer
        )
        async with (
            mapped_errors(where),
            self._session.delete(req.url, headers=req.headers, ssl=req.ssl) as resp,
        ):
            await raise_for_problem(resp, where)

    async def put_chunk(
        self,
        address: str,
        chunk_id: str,
        data: bytes | ChunkReader,
        reservation_id: str,
        *,
        size: int | None = None,
    ) -> ChunkReceipt:
        """Push a chunk under a reservation; return the holder's ack (verified and durable).

        ``data`` is the chunk's bytes, or an open store reader (read a piece at a time by a
        worker thread, :mod:`p2pshare.node.streams`, so only a piece is in memory) with its
        ``size``. Raises :class:`RemoteError` when the ack does not match what was sent.
        """
        validate_id(chunk_id, "chunk id")
        where = _where(address)
        if isinstance(data, bytes):
            size = len(data)
        elif size is None:
            raise TypeError("a chunk pushed from a reader needs its size")
        # the signature covers the body by its hash, which is the chunk id the holder checks
        req = prepare(
            "PUT",
            url_of(address, f"/v1/chunks/{chunk_id}"),
            params={"reservation": reservation_id},
            body_hash=chunk_id,
            signer=self._signer,
            headers={"Content-Type": "application/octet-stream"},
        )
        raw = await self._streams.put_from(
            address, req.url.raw_path_qs, req.headers, data, size, where=where
        )
        try:
            receipt = ChunkReceipt.model_validate_json(raw)
        except ValidationError as exc:
            raise RemoteError(f"{where}: malformed ack: {exc.errors()[0]['msg']}") from None
        if receipt.chunk_id != chunk_id or receipt.size != size:
            raise RemoteError(f"{where}: ack for {receipt.chunk_id} does not match the push")
        return receipt

    async def get_chunk(
        self, address: str, chunk_id: str, size: int, *, into: bytearray | mmap.mmap | None = None
    ) -> Fetched:
        """Read the ``size`` bytes of a chunk from ``address`` and hash them (the caller checks
        the hash against the id: a holder may lie).

        The bytes are read into ``into`` (at least ``size`` long; a buffer the caller reuses)
        or a new buffer, by a worker thread (:mod:`p2pshare.node.streams`). Never reads more
        than ``size`` bytes: a longer or shorter body is a :class:`RemoteError`.
        """
        validate_id(chunk_id, "chunk id")
        if into is not None and len(into) < size:
            raise ValueError(f"a buffer of {len(into)} bytes cannot hold {size}")
        buf = into if into is not None else bytearray(size)
        view = memoryview(buf)[:size]
        return await self._streams.get_into(
            address, f"/v1/chunks/{chunk_id}", view, where=_where(address)
        )

    async def challenge(self, address: str, body: Challenge) -> ChallengeAnswer:
        """Audit a holder: send a nonce, get its proof of holding the chunk."""
        answer = await call(
            self._session,
            "POST",
            url_of(address, "/v1/challenges"),
            ChallengeAnswer,
            body=body,
            where=_where(address),
            signer=self._signer,
        )
        if answer.chunk_id != body.chunk_id:
            raise RemoteError(f"{_where(address)}: answered for chunk {answer.chunk_id}")
        return answer

    async def ack(self, address: str, body: DownloadAck) -> AckReceipt:
        """Send a downloader's receipt to the holder at ``address``."""
        return await call(
            self._session,
            "POST",
            url_of(address, "/v1/acks"),
            AckReceipt,
            body=body,
            signer=self._signer,
            where=_where(address),
        )


def _where(address: str) -> str:
    """Name a node by its address (without the pin) in error messages."""
    return f"node {address.partition('#')[0]}"
