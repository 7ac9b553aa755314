"""Encrypted files on the owner's and the reader's side (design.md §6).

The uploader encrypts while it chunks (:func:`p2pshare.storage.hasher.ingest_file` with a key);
a download fetches and verifies the ciphertext chunks like any others, then :func:`decrypt_file`
turns the assembled ciphertext into the plaintext, one chunk in memory at a time, and checks
its SHA-256 against the manifest's sealed part. :func:`shown` gives a transfer's result the
plaintext's name, size and hash and the share link.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from p2pshare.core.chunking import ChunkPlan
from p2pshare.core.errors import IntegrityError, InvalidInput
from p2pshare.core.links import format_link
from p2pshare.core.manifest import Manifest
from p2pshare.core.node_messages import TransferResult
from p2pshare.security import sealing
from p2pshare.storage.diskio import Appender, BlockFile, aligned_buffer


class KeyRequired(InvalidInput):
    """A download of an encrypted file without its key."""

    code = "key-required"


def opened(manifest: Manifest, key: bytes | None) -> sealing.SealedPart | None:
    """Return the sealed part of an encrypted file's manifest (None for a plain file).

    Raises :class:`KeyRequired` when the file is encrypted and no key is given, and
    :class:`IntegrityError` when the key is not this file's.
    """
    if manifest.sealed is None:
        return None
    if key is None:
        raise KeyRequired(
            f"file {manifest.file_id} is encrypted: download it with its share link "
            "(p2pshare://FILE_ID#KEY) from the owner"
        )
    return sealing.unseal(key, manifest.sealed)


def shown(result: TransferResult, manifest: Manifest, key: bytes | None) -> TransferResult:
    """Return ``result`` as the owner or reader sees it: with the share link, and for an
    encrypted file the name, size and SHA-256 of the plaintext (from the sealed part)."""
    part = opened(manifest, key) if key is not None else None
    if part is None:
        return result.model_copy(update={"share_link": format_link(manifest.file_id)})
    update = {
        "name": part.name,
        "size": part.size,
        "sha256": part.sha256,
        "sha256_checked": True,  # the decrypting pass checks the plaintext against it
        "encrypted": True,
        "share_link": format_link(manifest.file_id, key),
    }
    return result.model_copy(update=update)


def decrypt_file(
    cipher: BlockFile, manifest: Manifest, key: bytes, part: sealing.SealedPart, out: Path
) -> None:
    """Write the plaintext of the assembled ciphertext read through ``cipher`` to ``out``
    (created new, mode 0644, fsynced) and check it against ``part``; blocking. Both files
    are read and written by direct I/O where allowed (storage/diskio.py).

    Raises :class:`IntegrityError` (``out`` removed) when a chunk does not decrypt or the
    plaintext's size or SHA-256 differ from the sealed ones.
    """
    digest = hashlib.sha256()
    written = 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    sink = Appender(fd)
    try:
        # two buffers for the whole file, made once (a fresh plaintext per chunk left glibc's
        # heap holding freed chunks: see storage.hasher._ingest_pieces)
        buf = memoryview(aligned_buffer(manifest.chunk_size))
        clear = memoryview(aligned_buffer(manifest.chunk_size))
        for span in ChunkPlan.for_size(manifest.size, manifest.chunk_size):
            got = cipher.read_into(buf[: span.length], span.offset)
            if got != span.length:
                raise IntegrityError(  # noqa: TRY301 - the except below only cleans up
                    f"the part file ends at {span.offset + got} bytes, before {manifest.size}"
                )
            plain = sealing.decrypt_chunk_into(key, span.index, buf[: span.length], clear)
            digest.update(plain)
            sink.write(plain)
            written += len(plain)
        if written != part.size or digest.hexdigest() != part.sha256:
            raise IntegrityError(  # noqa: TRY301 - the except below only cleans up
                f"the decrypted file is {written} bytes hashing to {digest.hexdigest()}, "
                f"not the sealed {part.size} bytes {part.sha256}"
            )
        sink.close()
        os.fsync(fd)
    except BaseException:
        sink.drop()
        os.close(fd)
        out.unlink(missing_ok=True)
        raise
    os.close(fd)
