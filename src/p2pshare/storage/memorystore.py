"""The chunk store in memory: :class:`MemoryChunkStore`, the fake shipped beside the real one.

Same contract as :class:`~p2pshare.storage.filestore.FileChunkStore` (the same test suite runs
against both), for tests of the layers above that need no disk. Nothing survives ``close``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from p2pshare.storage.chunkstore import (
    DEFAULT_MAX_CHUNK_SIZE,
    READ_PIECE,
    ChunkReader,
    ChunkStore,
    ChunkWriter,
    Clock,
    hash_update,
)
from p2pshare.storage.ledger import Ledger


class MemoryChunkStore(ChunkStore):
    """Chunks in a dict; reservations only in memory. Build it with :meth:`open`."""

    def __init__(self, ledger: Ledger, *, clock: Clock, max_chunk_size: int) -> None:
        super().__init__(ledger, clock=clock, max_chunk_size=max_chunk_size)
        self._chunks: dict[str, bytes] = {}
        self._quarantined: dict[str, bytes] = {}

    @classmethod
    async def open(
        cls,
        *,
        quota: int,
        clock: Clock = time.time,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> MemoryChunkStore:
        """Return an empty store offering ``quota`` bytes.

        Raises :class:`InvalidSize` for a bad ``quota`` or ``max_chunk_size``.
        """
        return cls(Ledger(quota, clock), clock=clock, max_chunk_size=max_chunk_size)

    async def close(self) -> None:
        """Do nothing: there is nothing to release."""

    # -- hooks -----------------------------------------------------------------------------

    async def _size_of(self, chunk_id: str) -> int | None:
        data = self._chunks.get(chunk_id)
        return None if data is None else len(data)

    def _writer(self, chunk_id: str, *, hashing: bool = True, durable: bool = True) -> ChunkWriter:
        return _MemoryWriter(self._chunks, chunk_id)  # always hashes: a fake favours checks

    async def _reader(self, chunk_id: str) -> ChunkReader | None:
        data = self._chunks.get(chunk_id)
        return None if data is None else _MemoryReader(chunk_id, data)

    async def _remove(self, chunk_id: str) -> int | None:
        data = self._chunks.pop(chunk_id, None)
        return None if data is None else len(data)

    async def _ids(self) -> list[str]:
        return sorted(self._chunks)

    async def _hash(self, chunk_id: str) -> str | None:
        data = self._chunks.get(chunk_id)
        if data is None:
            return None
        return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())

    async def _quarantine(self, chunk_id: str) -> int | None:
        data = self._chunks.pop(chunk_id, None)
        if data is None:
            return None
        self._quarantined[chunk_id] = data
        return len(data)


class _MemoryWriter:
    """Collects the pieces of one chunk; puts them in the dict on publish."""

    def __init__(self, chunks: dict[str, bytes], chunk_id: str) -> None:
        self._chunks = chunks
        self._chunk_id = chunk_id
        self._pieces: list[bytes] = []
        self._hash = hashlib.sha256()
        self.published = False

    async def start(self) -> None:
        self._pieces = []

    async def write(self, piece: bytes | bytearray | memoryview) -> None:
        await hash_update(self._hash, piece)
        self._pieces.append(bytes(piece))

    async def finish(self) -> str:
        return self._hash.hexdigest()

    async def publish(self) -> None:
        self._chunks[self._chunk_id] = b"".join(self._pieces)
        self._pieces = []
        self.published = True

    async def discard(self) -> None:
        self._pieces = []


class _MemoryReader(ChunkReader):
    """Hands out a stored ``bytes`` in pieces."""

    def __init__(self, chunk_id: str, data: bytes) -> None:
        super().__init__(chunk_id, len(data))
        self._view = memoryview(data)
        self._offset = 0

    async def _read_piece(self) -> bytes:
        piece = bytes(self._view[self._offset : self._offset + READ_PIECE])
        self._offset += len(piece)
        return piece

    def read_into(self, into: memoryview) -> int:
        piece = self._view[self._offset : self._offset + len(into)]
        into[: len(piece)] = piece
        self._offset += len(piece)
        return len(piece)

    def rewind(self) -> bool:
        self._offset = 0
        return True

    async def _close(self) -> None:
        self._view.release()
