"""Another node's peer API as typed calls: :class:`PeerClient`."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
from p2pshare.node.http import TRANSFER_TIMEOUT, call, mapped_errors, raise_for_problem
from p2pshare.node.limits import Piece, RateLimiter, pieces_of


class PeerClient:
    """Calls to other nodes' peer APIs over a shared session (which the caller owns)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        upload: RateLimiter | None = None,
        download: RateLimiter | None = None,
    ) -> None:
        self._session = session
        self._up = upload or RateLimiter(None)
        self._down = download or RateLimiter(None)

    async def reserve(self, address: str, body: ReservationRequest) -> ReservationGrant:
        """Ask the node at ``address`` for a reservation; raise QuotaExceeded when it is full."""
        return await call(
            self._session,
            "POST",
            f"{address}/v1/reservations",
            ReservationGrant,
            body=body,
            where=f"node {address}",
        )

    async def release(self, address: str, reservation_id: str) -> None:
        """End a reservation at ``address`` early."""
        where = f"node {address}"
        async with (
            mapped_errors(where),
            self._session.delete(f"{address}/v1/reservations/{reservation_id}") as resp,
        ):
            await raise_for_problem(resp, where)

    async def put_chunk(
        self, address: str, chunk_id: str, data: bytes, reservation_id: str
    ) -> ChunkReceipt:
        """Push a chunk under a reservation; return the holder's ack (verified and durable).

        Raises :class:`RemoteError` when the ack does not match what was sent.
        """
        validate_id(chunk_id, "chunk id")
        where = f"node {address}"
        body: bytes | AsyncIterator[Piece] = (
            self._up.paced(pieces_of(data)) if self._up.rate else data
        )
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        async with (
            mapped_errors(where),
            self._session.put(
                f"{address}/v1/chunks/{chunk_id}",
                params={"reservation": reservation_id},
                data=body,
                headers=headers,
                timeout=TRANSFER_TIMEOUT,
            ) as resp,
        ):
            await raise_for_problem(resp, where)
            raw = await resp.read()
        receipt = ChunkReceipt.model_validate_json(raw)
        if receipt.chunk_id != chunk_id or receipt.size != len(data):
            raise RemoteError(f"{where}: ack for {receipt.chunk_id} does not match the push")
        return receipt

    async def get_chunk(self, address: str, chunk_id: str, size: int) -> bytearray:
        """Return the ``size`` bytes of a chunk from ``address``, unverified (the caller hashes).

        Never reads more than ``size`` bytes: a longer or shorter body is a
        :class:`RemoteError`.
        """
        validate_id(chunk_id, "chunk id")
        where = f"node {address}"
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        async with (
            mapped_errors(where),
            self._session.get(f"{address}/v1/chunks/{chunk_id}", timeout=TRANSFER_TIMEOUT) as resp,
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
        return buf

    async def challenge(self, address: str, body: Challenge) -> ChallengeAnswer:
        """Audit a holder: send a nonce, get its proof of holding the chunk."""
        answer = await call(
            self._session,
            "POST",
            f"{address}/v1/challenges",
            ChallengeAnswer,
            body=body,
            where=f"node {address}",
        )
        if answer.chunk_id != body.chunk_id:
            raise RemoteError(f"node {address}: answered for chunk {answer.chunk_id}")
        return answer

    async def ack(self, address: str, body: DownloadAck) -> AckReceipt:
        """Send a downloader's receipt to the holder at ``address``."""
        return await call(
            self._session,
            "POST",
            f"{address}/v1/acks",
            AckReceipt,
            body=body,
            where=f"node {address}",
        )
