"""Another node's peer API as typed calls: :class:`PeerClient`."""

from __future__ import annotations

from collections.abc import AsyncIterable

import aiohttp

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
    TRANSFER_TIMEOUT,
    call,
    mapped_errors,
    prepare,
    raise_for_problem,
    url_of,
)
from p2pshare.node.limits import Piece, RateLimiter, pieces_of
from p2pshare.security.signing import Signer


class PeerClient:
    """Calls to other nodes' peer APIs over a shared session (which the caller owns).

    Requests that change something at the holder (reservations, pushes, acks, challenges) are
    signed by ``signer``; addresses carry the holder's certificate pin (:func:`url_of`).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        signer: Signer | None = None,
        upload: RateLimiter | None = None,
        download: RateLimiter | None = None,
    ) -> None:
        self._session = session
        self._signer = signer
        self._up = upload or RateLimiter(None)
        self._down = download or RateLimiter(None)

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
        data: bytes | AsyncIterable[Piece],
        reservation_id: str,
        *,
        size: int | None = None,
    ) -> ChunkReceipt:
        """Push a chunk under a reservation; return the holder's ack (verified and durable).

        ``data`` is the chunk's bytes, or its pieces (e.g. a store reader, so only a piece at a
        time is in memory) with its ``size``. Raises :class:`RemoteError` when the ack does not
        match what was sent.
        """
        validate_id(chunk_id, "chunk id")
        where = _where(address)
        if isinstance(data, bytes):
            size = len(data)
            pieces: AsyncIterable[Piece] = pieces_of(data)
        elif size is None:
            raise TypeError("a chunk pushed in pieces needs its size")
        else:
            pieces = data
        body: bytes | AsyncIterable[Piece] = self._up.paced(pieces) if self._up.rate else data
        # the signature covers the body by its hash, which is the chunk id the holder checks
        req = prepare(
            "PUT",
            url_of(address, f"/v1/chunks/{chunk_id}"),
            params={"reservation": reservation_id},
            body_hash=chunk_id,
            signer=self._signer,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
            },
        )
        async with (
            mapped_errors(where),
            self._session.put(
                req.url, data=body, headers=req.headers, ssl=req.ssl, timeout=TRANSFER_TIMEOUT
            ) as resp,
        ):
            await raise_for_problem(resp, where)
            raw = await resp.read()
        receipt = ChunkReceipt.model_validate_json(raw)
        if receipt.chunk_id != chunk_id or receipt.size != size:
            raise RemoteError(f"{where}: ack for {receipt.chunk_id} does not match the push")
        return receipt

    async def get_chunk(
        self, address: str, chunk_id: str, size: int, *, into: bytearray | None = None
    ) -> memoryview:
        """Return the ``size`` bytes of a chunk from ``address``, unverified (the caller hashes).

        The bytes are read into ``into`` (at least ``size`` long; a buffer the caller reuses)
        or a new buffer. Never reads more than ``size`` bytes: a longer or shorter body is a
        :class:`RemoteError`.
        """
        validate_id(chunk_id, "chunk id")
        where = _where(address)
        if into is not None and len(into) < size:
            raise ValueError(f"a buffer of {len(into)} bytes cannot hold {size}")
        buf = into if into is not None else bytearray(size)
        view = memoryview(buf)[:size]
        got = 0
        req = prepare("GET", url_of(address, f"/v1/chunks/{chunk_id}"))
        async with (
            mapped_errors(where),
            self._session.get(req.url, ssl=req.ssl, timeout=TRANSFER_TIMEOUT) as resp,
        ):
            await raise_for_problem(resp, where)
            if resp.content_length is not None and resp.content_length != size:
                raise RemoteError(
                    f"{where}: chunk {chunk_id[:12]} is {resp.content_length} bytes, "
                    f"expected {size}"
                )
            async for piece in self._down.paced(resp.content.iter_chunked(1 << 20)):
                end = got + len(piece)
                if end > size:
                    raise RemoteError(f"{where}: chunk {chunk_id[:12]} is longer than {size}")
                view[got:end] = piece
                got = end
        if got != size:
            raise RemoteError(f"{where}: chunk {chunk_id[:12]} ended at {got} of {size} bytes")
        return view

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
