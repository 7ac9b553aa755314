"""The streaming hasher: reads a file once, in chunk-size pieces, and returns its manifest
(:func:`hash_file`), optionally storing every chunk on the way (:func:`ingest_file`).

The read happens in a worker thread into one preallocated buffer, so memory stays at one chunk
whatever the file's size, and the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from p2pshare.core.errors import IntegrityError, InvalidInput, NotFound
from p2pshare.core.manifest import Manifest, ManifestBuilder, validate_name
from p2pshare.security import sealing
from p2pshare.storage.chunkstore import ChunkStore

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


async def hash_file(
    path: Path,
    *,
    chunk_size: int,
    created: datetime,
    name: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Manifest:
    """Return the manifest of the file at ``path``, read in a worker thread.

    Same arguments and errors as :func:`hash_file_sync`.
    """
    return await asyncio.to_thread(
        hash_file_sync,
        path,
        chunk_size=chunk_size,
        created=created,
        name=name,
        on_progress=on_progress,
    )


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
    chunk at a time in a worker thread (memory: one chunk), each chunk is hashed and put into
    the store (a chunk already there is not written again). ``on_progress`` is called on the
    event loop with the bytes of each chunk done. With ``key`` each chunk is encrypted first
    (:mod:`p2pshare.security.sealing`): the store, and the manifest's chunk ids, hold the
    ciphertext, and the name, size and SHA-256 of the plaintext are sealed in the manifest.
    Raises like :func:`hash_file_sync`, and what :meth:`ChunkStore.put` raises (e.g.
    :class:`QuotaExceeded` when the store is full).
    """
    builder = ManifestBuilder(chunk_size)
    name = validate_name(path.name if name is None else name)
    piece_size = chunk_size if key is None else sealing.plain_chunk_size(chunk_size)
    plain_sha = hashlib.sha256()
    read = 0
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
        buf = bytearray(piece_size)
        view = memoryview(buf)
        index = 0
        while True:
            n = await asyncio.to_thread(_read_full, fh, view)
            if n == 0:
                break
            piece = bytes(view[:n])
            read += n
            if key is not None:
                piece = await asyncio.to_thread(_seal_chunk, plain_sha, key, index, piece)
            chunk_id = await asyncio.to_thread(builder.add_chunk, piece)
            await store.put(chunk_id, piece, verified=True)  # just hashed by the builder
            index += 1
            if on_progress is not None:
                on_progress(n)
            if n < piece_size:
                break
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


def _seal_chunk(plain_sha: Any, key: bytes, index: int, piece: bytes) -> bytes:
    """Hash a plaintext chunk into ``plain_sha`` and return it encrypted (worker thread)."""
    plain_sha.update(piece)
    return sealing.encrypt_chunk(key, index, piece)
