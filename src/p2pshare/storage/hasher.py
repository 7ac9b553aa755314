"""The streaming hasher: reads a file once, in chunk-size pieces, and returns its manifest
(:func:`hash_file_sync`, blocking: the CLI's ``manifest`` command), optionally storing every
chunk on the way (:func:`ingest_file`, the upload's).

Reads go into preallocated buffers (one for :func:`hash_file_sync`, a few reused ones for the
pipeline of :func:`ingest_file`, read in worker threads so the event loop never blocks), so
memory stays at a few chunks whatever the file's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from p2pshare.core.errors import IntegrityError, InvalidInput, NotFound
from p2pshare.core.ids import chunk_id as hash_chunk
from p2pshare.core.manifest import Manifest, ManifestBuilder, validate_name
from p2pshare.security import sealing
from p2pshare.storage.chunkstore import ChunkStore
from p2pshare.storage.diskio import aligned_buffer

ProgressCallback = Callable[[int], None]
"""Called from the worker thread with the number of bytes just read."""


def hash_file_sync(
    path: Path,
    *,
    chunk_size: int,
    created: datetime,
    name: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Manifest:
    """Return the manifest of the file at ``path`` (blocking; call it from a thread).

    ``name`` defaults to the file's own name. Raises :class:`NotFound` when there is no such
    file, :class:`InvalidInput` when it is not a regular file or cannot be read, and
    :class:`IntegrityError` when the file changes size while it is read.
    """
    builder = ManifestBuilder(chunk_size)
    name = validate_name(path.name if name is None else name)
    try:
        with path.open("rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"{path}: not a regular file")
            buf = bytearray(chunk_size)
            view = memoryview(buf)
            while True:
                n = _read_full(fh, view)
                if n == 0:
                    break
                builder.add_chunk(view[:n])
                if on_progress is not None:
                    on_progress(n)
                if n < chunk_size:
                    break
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path}: is a directory, not a file") from None
    except PermissionError:
        raise InvalidInput(f"{path}: permission denied") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from None
    if builder.size != info.st_size:
        raise IntegrityError(
            f"{path}: changed while it was read ({info.st_size} bytes before, {builder.size} read)"
        )
    return builder.finish(name, created)


def _read_full(fh: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``fh``; return the bytes read (fewer only at end of file)."""
    total = 0
    while total < len(view):
        n = fh.readinto(view[total:])
        if not n:
            break
        total += n
    return total


async def ingest_file(
    store: ChunkStore,
    path: Path,
    *,
    chunk_size: int,
    created: datetime,
    name: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    key: bytes | None = None,
) -> Manifest:
    """Read the file at ``path`` once, store each chunk in ``store``, and return the manifest.

    This is the uploader's chunk assembly folder (upload steps 4-5): the file is read one
    chunk at a time in worker threads (memory: a few chunks, see :func:`_ingest_pieces`), each
    chunk is hashed and put into the store (a chunk already there is not written again).
    ``on_progress`` is called on the event loop with the bytes of each chunk done. With
    ``key`` each chunk is encrypted first (:mod:`p2pshare.security.sealing`): the store, and
    the manifest's chunk ids, hold the ciphertext, and the name, size and SHA-256 of the
    plaintext are sealed in the manifest.
    Raises like :func:`hash_file_sync`, and what :meth:`ChunkStore.put` raises (e.g.
    :class:`QuotaExceeded` when the store is full).
    """
    builder = ManifestBuilder(chunk_size)
    name = validate_name(path.name if name is None else name)
    piece_size = chunk_size if key is None else sealing.plain_chunk_size(chunk_size)
    plain_sha = hashlib.sha256()
    try:
        fh = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path}: is a directory, not a file") from None
    except PermissionError:
        raise InvalidInput(f"{path}: permission denied") from None
    try:
        info = await asyncio.to_thread(os.fstat, fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"{path}: not a regular file")
        read = await _ingest_pieces(store, fh, builder, piece_size, plain_sha, key, on_progress)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from None
    finally:
        await asyncio.to_thread(fh.close)
    if read != info.st_size:
        raise IntegrityError(
            f"{path}: changed while it was read ({info.st_size} bytes before, {read} read)"
        )
    if key is None:
        return builder.finish(name, created)
    part = sealing.SealedPart(name, read, plain_sha.hexdigest())
    return builder.finish(sealing.ENCRYPTED_NAME, created, sealing.seal(key, part))


STORES_IN_FLIGHT = 3
"""Chunks being written to the store at once while later ones are read and hashed (their
flushes overlap: the filesystem commits them together)."""


async def _ingest_pieces(
    store: ChunkStore,
    fh: BinaryIO,
    builder: ManifestBuilder,
    piece_size: int,
    plain_sha: Any,
    key: bytes | None,
    on_progress: Callable[[int], None] | None,
) -> int:
    """Read, hash and store every chunk of ``fh``; return the bytes read.

    A pipeline over reused buffers: while chunk i is hashed (its id and the whole-file hash in
    two worker threads at once), chunk i+1 is read and up to :data:`STORES_IN_FLIGHT` earlier
    chunks are written to the store. Memory: ``STORES_IN_FLIGHT + 2`` chunks (encrypted: two
    plaintext buffers and ``STORES_IN_FLIGHT + 1`` for the ciphertexts, the one being hashed
    and those being stored).

    The buffers are made once, page-aligned and mapped apart from the heap: the store writes
    a chunk from them by direct I/O without a staging copy, and they are unmapped at the end.
    A fresh ciphertext per chunk (as before) left glibc's heap holding freed chunks, and an
    uploading node's peak grew with each encrypted upload (1 GiB in 8 MiB chunks: 146 MiB
    after one, 157 after two; 4 MiB chunks: 114, then 129).
    """
    # encrypted: a plaintext buffer is free once sealed (the store takes the ciphertext)
    count = 2 if key is not None else STORES_IN_FLIGHT + 2
    views = [memoryview(aligned_buffer(piece_size)) for _ in range(count)]
    # chunk i's ciphertext goes to sealed[i % len(sealed)]: the chunk that used it before,
    # i - STORES_IN_FLIGHT - 1, is stored by then (at most STORES_IN_FLIGHT wait, i-1 back)
    sealed_count = 0 if key is None else STORES_IN_FLIGHT + 1
    sealed = [
        memoryview(aligned_buffer(piece_size + sealing.OVERHEAD)) for _ in range(sealed_count)
    ]
    reading: asyncio.Future[int] | None = None
    storing: deque[tuple[int, asyncio.Task[object]]] = deque()
    read = index = 0
    try:
        reading = asyncio.ensure_future(asyncio.to_thread(_read_full, fh, views[0]))
        while True:
            n = await reading
            reading = None
            if n == 0:
                break
            read += n
            last = n < piece_size
            if not last:
                # the next buffer held chunk index + 1 - count: its write must be done
                while key is None and storing and storing[0][0] <= index + 1 - count:
                    await storing.popleft()[1]
                reading = asyncio.ensure_future(
                    asyncio.to_thread(_read_full, fh, views[(index + 1) % count])
                )
            piece: bytes | memoryview = views[index % count][:n]
            if key is not None:
                out = sealed[index % len(sealed)]
                piece = await asyncio.to_thread(_seal_chunk, plain_sha, key, index, piece, out)
            chunk_id, _ = await asyncio.gather(
                asyncio.to_thread(hash_chunk, piece), asyncio.to_thread(builder.take, piece)
            )
            builder.name_chunk(chunk_id)
            if len(storing) >= STORES_IN_FLIGHT:
                await storing.popleft()[1]
            # just hashed above: not hashed again by the store
            storing.append((index, asyncio.create_task(store.put(chunk_id, piece, verified=True))))
            index += 1
            if on_progress is not None:
                on_progress(n)
            if last:
                break
        while storing:
            await storing.popleft()[1]
    finally:
        # no worker thread may still use the file or a buffer when this returns
        steps = [task for _, task in storing] + ([reading] if reading is not None else [])
        for step in steps:
            step.cancel()
        for step in steps:
            with contextlib.suppress(BaseException):
                await step
    return read


def _seal_chunk(
    plain_sha: Any, key: bytes, index: int, piece: bytes | memoryview, out: memoryview
) -> memoryview:
    """Hash a plaintext chunk into ``plain_sha`` and return it encrypted into ``out`` (worker
    thread)."""
    plain_sha.update(piece)
    return sealing.encrypt_chunk_into(key, index, piece, out)
