"""The chunk store contract, and the behaviour every implementation shares.

A chunk store keeps chunks by id (the SHA-256 of their bytes) within a quota of bytes it
offers, and holds reservations of that space for uploads. Two implementations share this base
class and one contract test suite: :class:`~p2pshare.storage.filestore.FileChunkStore` (files on
disk, the real one) and :class:`~p2pshare.storage.memorystore.MemoryChunkStore` (a dict, the
fake for tests of the layers above). The base class owns the rules (validation, the per-chunk
lock, quota and reservation accounting, hash verification before a chunk becomes visible);
a subclass only moves bytes, through the ``_``-prefixed hooks at the bottom of the class.

A put, step by step: validate the id and size; check the reservation, if one is given; take the
chunk's lock; if the chunk is already there, return ``created=False`` without reading the data
or consuming any space; otherwise claim the bytes (all at once for ``bytes``, piece by piece as
they arrive for a stream), write them to a temp object while hashing, compare the hash with the
id, and only then publish the chunk; on any failure refund the claim and discard the temp.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from p2pshare.core.errors import IntegrityError, InvalidInput, InvalidSize, NotFound, QuotaExceeded
from p2pshare.core.ids import validate_id
from p2pshare.core.sizes import format_size
from p2pshare.storage.ledger import Claim, Ledger, Reservation
from p2pshare.storage.locks import KeyedLock

log = logging.getLogger(__name__)

DEFAULT_MAX_CHUNK_SIZE = 64 * 2**20
READ_PIECE = 2**20
"""Bytes per piece handed out by :meth:`ChunkStore.get`."""
_HASH_INLINE = 64 * 1024
"""Pieces up to this size are hashed on the event loop; larger ones in a thread."""

Clock = Callable[[], float]


@dataclass(frozen=True)
class PutResult:
    """What :meth:`ChunkStore.put` did."""

    chunk_id: str
    size: int
    """bytes of the chunk."""
    created: bool
    """False when the chunk was already stored (the put changed nothing)."""


@dataclass(frozen=True)
class ScanReport:
    """What :meth:`ChunkStore.scan` found."""

    checked: int
    """chunks re-hashed."""
    quarantined: tuple[str, ...]
    """ids of the chunks whose bytes did not match and were moved aside."""


def validate_max_chunk_size(max_chunk_size: int) -> int:
    """Return ``max_chunk_size`` when it is a positive whole number; raise :class:`InvalidSize`."""
    if (
        isinstance(max_chunk_size, bool)
        or not isinstance(max_chunk_size, int)
        or max_chunk_size <= 0
    ):
        raise InvalidSize(f"max chunk size must be a positive number of bytes: {max_chunk_size!r}")
    return max_chunk_size


async def hash_update(digest: hashlib._Hash, piece: bytes | bytearray | memoryview) -> None:
    """Feed ``piece`` to ``digest``, in a thread when it is large enough to stall the loop."""
    if len(piece) <= _HASH_INLINE:
        digest.update(piece)
    else:
        await asyncio.to_thread(digest.update, piece)


class ChunkWriter(Protocol):
    """A chunk being written, invisible until :meth:`publish` (a store's internal hook)."""

    @property
    def published(self) -> bool:
        """Return whether :meth:`publish` has made the chunk visible."""
        ...

    async def start(self) -> None:
        """Create the temp object."""

    async def write(self, piece: bytes | bytearray | memoryview) -> None:
        """Hash ``piece`` and append it."""

    async def finish(self) -> str:
        """Make the bytes durable and return their SHA-256 hex."""
        ...

    async def publish(self) -> None:
        """Make the chunk visible under its id."""

    async def discard(self) -> None:
        """Remove the temp object; safe at any point, never raises for a missing one."""


class ChunkReader(abc.ABC):
    """An open chunk: ``async for piece in reader`` yields its bytes in pieces of up to 1 MiB.

    Closes itself at the end of the bytes; close it earlier with :meth:`aclose` or by using it
    as ``async with``. ``size`` is known before the first byte (for a Content-Length).
    """

    def __init__(self, chunk_id: str, size: int) -> None:
        self.chunk_id = chunk_id
        self.size = size
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        piece = await self._read_piece()
        if not piece:
            await self.aclose()
            raise StopAsyncIteration
        return piece

    async def aclose(self) -> None:
        """Release what the reader holds (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def fileno(self) -> int | None:
        """Return the descriptor of a file whose bytes from offset 0 are exactly the chunk's,
        for sending without a copy (``sendfile``); None when the bytes must pass through the
        reader (held in memory, or checked as they are read)."""
        return None

    def rewind(self) -> bool:
        """Blocking: start :meth:`read_into` again from the chunk's first byte (a push sent
        again on a fresh connection); return False when this reader cannot."""
        return False

    @abc.abstractmethod
    async def _read_piece(self) -> bytes:
        """Return the next piece, or ``b""`` at the end."""

    @abc.abstractmethod
    def read_into(self, into: memoryview) -> int:
        """Blocking, for a worker thread: read the next bytes into ``into``; return how many
        (0 at the end). Use either this or ``async for``, not both on one reader."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release the underlying resource."""


class ChunkStore(abc.ABC):
    """Content-addressed chunks within a quota, with reservations. See the module docstring.

    Build one with the implementation's async ``open`` factory and end it with :meth:`close`
    (or ``async with``). Every method must be called from the event loop the store was opened
    on; none blocks it.
    """

    def __init__(self, ledger: Ledger, *, clock: Clock, max_chunk_size: int) -> None:
        self._ledger = ledger
        self._clock = clock
        self._max_chunk_size = validate_max_chunk_size(max_chunk_size)
        self._locks = KeyedLock()

    # -- accounting ------------------------------------------------------------------------

    @property
    def quota(self) -> int:
        """Return the bytes this store offers."""
        return self._ledger.quota

    @property
    def used_bytes(self) -> int:
        """Return the bytes of the chunks stored."""
        return self._ledger.used

    @property
    def reserved_bytes(self) -> int:
        """Return the bytes still promised to live reservations (not yet used by chunks)."""
        return self._ledger.reserved()

    @property
    def free_bytes(self) -> int:
        """Return the bytes a put without a reservation, or a new reservation, may still take.

        That is the quota less the stored chunks, the live reservations' unused bytes and the
        bytes of puts in flight; never negative.
        """
        return self._ledger.free()

    @property
    def max_chunk_size(self) -> int:
        """Return the largest chunk a put accepts."""
        return self._max_chunk_size

    # -- chunks ----------------------------------------------------------------------------

    async def put(
        self,
        chunk_id: str,
        data: bytes | bytearray | memoryview | AsyncIterable[bytes],
        *,
        reservation_id: str | None = None,
        verified: bool = False,
        durable: bool = True,
    ) -> PutResult:
        """Store ``data`` as chunk ``chunk_id`` once its hash is verified; return what happened.

        ``verified`` says the caller has just hashed these very bytes (in memory, in this
        process) to ``chunk_id``, so they are not hashed again; only for whole-chunk bytes.
        ``durable=False`` is for a cache copy (a downloader's copy kept to serve others): it is
        not flushed to disk, so a crash may lose or damage it; whoever fetches it verifies it,
        and the integrity scan finds it.

        ``data`` is the whole chunk, or an async iterable of pieces read one at a time. With
        ``reservation_id`` the bytes are drawn from that reservation; without, from the free
        space. A chunk already stored is not read again: the result has ``created=False`` and
        nothing is consumed. Concurrent puts of one chunk store it once.

        Raises :class:`InvalidId` for a malformed id; :class:`InvalidInput` for more than
        :attr:`max_chunk_size` bytes (reading stops there); :class:`IntegrityError` when the
        bytes do not hash to ``chunk_id``; :class:`QuotaExceeded` when they do not fit the free
        space (or the disk is full); :class:`ReservationError` when the reservation is unknown
        or too small and :class:`ReservationExpired` when it has lapsed. On every error nothing
        is left behind and nothing stays claimed.
        """
        validate_id(chunk_id, "chunk id")
        if isinstance(data, bytes | bytearray | memoryview):
            self._check_size(chunk_id, len(data))
        elif not isinstance(data, AsyncIterable):
            raise TypeError(f"chunk data must be bytes or an async iterable, not {type(data)}")
        elif verified:
            raise TypeError("only whole-chunk bytes can be put as verified")
        if reservation_id is not None:
            self._ledger.get(reservation_id)
        async with self._lock(chunk_id):
            existing = await self._size_of(chunk_id)
            if existing is not None:
                return PutResult(chunk_id, existing, created=False)
            claim = Claim(reservation_id)
            writer = self._writer(chunk_id, hashing=not verified, durable=durable)
            try:
                await self._write_verified(chunk_id, data, writer, claim, verified=verified)
            except BaseException as exc:
                if writer.published:  # cancelled after the rename: the chunk is there, count it
                    self._ledger.settle(claim)
                    raise
                self._ledger.refund(claim)
                await asyncio.shield(writer.discard())
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise QuotaExceeded(f"disk full while storing chunk {chunk_id}") from exc
                raise
            updated = self._ledger.settle(claim)
        if updated is not None:
            await self._save_used(updated)
        await self._created(chunk_id)
        log.debug("stored chunk %s (%d bytes)", chunk_id, claim.nbytes)
        return PutResult(chunk_id, claim.nbytes, created=True)

    async def keep(
        self, chunk_id: str, data: bytes | bytearray | memoryview, *, at: tuple[Path, int] | None
    ) -> None:
        """Keep chunk ``chunk_id`` to serve others: ``data``, just hashed to ``chunk_id`` by the
        caller, which also wrote it at ``at`` (file, offset) when given (a download's part
        file). This store keeps a cache copy (``put(verified=True, durable=False)``); a store
        that can serve from the file instead keeps a reference to that range.

        Raises like :meth:`put` (:class:`QuotaExceeded` when the copy does not fit).
        """
        await self.put(chunk_id, data, verified=True, durable=False)

    async def kept_file_moved(self, old: Path, new: Path) -> None:  # noqa: B027 - optional hook
        """The file at ``old`` that :meth:`keep` was given is complete and now named ``new``."""

    async def get(self, chunk_id: str) -> ChunkReader:
        """Return an open reader of chunk ``chunk_id`` (see :class:`ChunkReader`).

        Raises :class:`InvalidId` for a malformed id and :class:`NotFound` when it is absent.
        """
        validate_id(chunk_id, "chunk id")
        reader = await self._reader(chunk_id)
        if reader is None:
            raise NotFound(f"no chunk {chunk_id}")
        return reader

    async def read(self, chunk_id: str) -> bytes:
        """Return the whole of chunk ``chunk_id``; raises like :meth:`get`."""
        async with await self.get(chunk_id) as reader:
            return b"".join([piece async for piece in reader])

    async def has(self, chunk_id: str) -> bool:
        """Return whether chunk ``chunk_id`` is stored; raise :class:`InvalidId` if malformed."""
        validate_id(chunk_id, "chunk id")
        return await self._size_of(chunk_id) is not None

    async def size(self, chunk_id: str) -> int:
        """Return the bytes of chunk ``chunk_id``.

        Raises :class:`InvalidId` for a malformed id and :class:`NotFound` when it is absent.
        """
        validate_id(chunk_id, "chunk id")
        size = await self._size_of(chunk_id)
        if size is None:
            raise NotFound(f"no chunk {chunk_id}")
        return size

    async def delete(self, chunk_id: str) -> None:
        """Remove chunk ``chunk_id`` and free its bytes.

        Raises :class:`InvalidId` for a malformed id and :class:`NotFound` when it is absent.
        """
        validate_id(chunk_id, "chunk id")
        async with self._lock(chunk_id):
            size = await self._remove(chunk_id)
            if size is None:
                raise NotFound(f"no chunk {chunk_id}")
            self._ledger.remove_used(size)

    async def list(self) -> list[str]:
        """Return the ids of the stored chunks, sorted."""
        return await self._ids()

    async def scan(self) -> ScanReport:
        """Re-hash every chunk; quarantine and stop counting those whose bytes no longer match.

        Returns how many chunks were checked and which were quarantined. Each chunk is checked
        under its lock, so a scan can run beside puts and deletes.
        """
        checked = 0
        quarantined: list[str] = []
        for chunk_id in await self._ids():
            async with self._lock(chunk_id):
                digest = await self._hash(chunk_id)
                if digest is None:
                    continue
                checked += 1
                if digest == chunk_id:
                    continue
                size = await self._quarantine(chunk_id)
                if size is None:
                    continue
                self._ledger.remove_used(size)
                quarantined.append(chunk_id)
                log.warning("chunk %s hashes to %s: quarantined (%d bytes)", chunk_id, digest, size)
        return ScanReport(checked, tuple(quarantined))

    # -- reservations ----------------------------------------------------------------------

    async def reserve(self, upload_id: str, nbytes: int, ttl: float) -> Reservation:
        """Promise ``nbytes`` to ``upload_id`` for ``ttl`` seconds; return the reservation.

        Raises :class:`QuotaExceeded` when the free space is short and :class:`InvalidInput`
        for an empty upload id, a non-positive size or ttl.
        """
        reservation = self._ledger.reserve(upload_id, nbytes, ttl)
        try:
            await self._save_new(reservation)
        except BaseException:
            self._ledger.drop(reservation.reservation_id)
            raise
        log.debug(
            "reserved %s for upload %s as %s",
            format_size(nbytes),
            upload_id,
            reservation.reservation_id,
        )
        return reservation

    async def get_reservation(self, reservation_id: str) -> Reservation:
        """Return the live reservation ``reservation_id``.

        Raises :class:`ReservationError` when it is unknown and :class:`ReservationExpired`
        when it has lapsed.
        """
        return self._ledger.get(reservation_id)

    async def release(self, reservation_id: str) -> None:
        """End reservation ``reservation_id`` early; its unused bytes are free again.

        Chunks already stored under it stay. Raises :class:`ReservationError` when it is
        unknown (a lapsed but not yet expired one is released without complaint).
        """
        self._ledger.drop(reservation_id)
        await self._forget([reservation_id])

    async def expire(self) -> int:
        """Drop every reservation whose expiry has passed; return how many were dropped.

        Lapsed reservations stop counting against the free space at once anyway; this makes it
        permanent (and on disk).
        """
        expired = self._ledger.expired()
        for reservation_id in expired:
            self._ledger.drop(reservation_id)
        if expired:
            await self._forget(expired)
            log.info("dropped %d expired reservations", len(expired))
        return len(expired)

    # -- lifetime --------------------------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store's files and connections (idempotent)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals shared by the implementations -------------------------------------------

    def _check_size(self, chunk_id: str, nbytes: int) -> None:
        if nbytes > self._max_chunk_size:
            raise InvalidInput(
                f"chunk {chunk_id} is larger than the {format_size(self._max_chunk_size)} "
                "this store accepts"
            )

    async def _write_verified(
        self,
        chunk_id: str,
        data: bytes | bytearray | memoryview | AsyncIterable[bytes],
        writer: ChunkWriter,
        claim: Claim,
        *,
        verified: bool = False,
    ) -> None:
        """Claim, write, verify and publish; the caller cleans up when this raises."""
        if isinstance(data, bytes | bytearray | memoryview):
            self._ledger.claim(claim, len(data))
            await writer.start()
            await writer.write(data)
        else:
            await writer.start()
            async for piece in data:
                if not piece:
                    continue
                self._check_size(chunk_id, claim.nbytes + len(piece))
                self._ledger.claim(claim, len(piece))
                await writer.write(piece)
        digest = await writer.finish()
        if not verified and digest != chunk_id:
            raise IntegrityError(f"chunk bytes hash to {digest}, not to its id {chunk_id}")
        await writer.publish()

    @asynccontextmanager
    async def _lock(self, chunk_id: str) -> AsyncIterator[None]:
        async with self._locks.hold(chunk_id), self._process_lock(chunk_id):
            yield

    # -- hooks -----------------------------------------------------------------------------

    def _process_lock(self, chunk_id: str) -> AbstractAsyncContextManager[None]:
        """Return the cross-process lock of ``chunk_id`` (none by default)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    async def _size_of(self, chunk_id: str) -> int | None:
        """Return the size of the chunk, or None when it is absent."""

    @abc.abstractmethod
    def _writer(self, chunk_id: str, *, hashing: bool = True, durable: bool = True) -> ChunkWriter:
        """Return a writer for a new chunk (no I/O until its ``start``); with ``hashing``
        False it may skip hashing (its ``finish`` then returns anything), with ``durable``
        False it may skip flushing to disk."""

    @abc.abstractmethod
    async def _reader(self, chunk_id: str) -> ChunkReader | None:
        """Return an open reader, or None when the chunk is absent."""

    @abc.abstractmethod
    async def _remove(self, chunk_id: str) -> int | None:
        """Delete the chunk; return its size, or None when it was absent."""

    @abc.abstractmethod
    async def _ids(self) -> list[str]:
        """Return the sorted ids of the stored chunks."""

    @abc.abstractmethod
    async def _hash(self, chunk_id: str) -> str | None:
        """Return the SHA-256 hex of the stored bytes, or None when the chunk is absent."""

    @abc.abstractmethod
    async def _quarantine(self, chunk_id: str) -> int | None:
        """Move the chunk out of the store; return its size, or None when it was absent."""

    async def _created(self, chunk_id: str) -> None:  # noqa: B027 - optional hook
        """A put wrote chunk ``chunk_id`` (after its bytes were counted)."""

    async def _save_new(self, reservation: Reservation) -> None:  # noqa: B027 - optional hook
        """Persist a new reservation (nothing by default)."""

    async def _save_used(self, reservation: Reservation) -> None:  # noqa: B027 - optional hook
        """Persist a reservation's new ``used`` (nothing by default)."""

    async def _forget(self, reservation_ids: list[str]) -> None:  # noqa: B027 - optional hook
        """Persist that reservations are gone (nothing by default)."""
