"""Private files: each chunk encrypted with the file's key before it leaves the owner.

AES-256-GCM (``cryptography``) with a random 32-byte key per file. The nonce of chunk ``i`` is
``i`` (12 bytes, big-endian), so a chunk always encrypts to the same ciphertext under the same
key: a resumed upload pushes the very bytes it pushed before, and the chunk ids (the SHA-256 of
the ciphertext) stay the same. A key is used for one plaintext at one chunk size only (the
owner's keyring is indexed by both), so no nonce is ever used for two different plaintexts.

Each ciphertext chunk is :data:`OVERHEAD` bytes longer than its plaintext (the GCM tag): the
file is cut into plaintext pieces of ``chunk_size - OVERHEAD`` so that the ciphertext chunks
are exactly ``chunk_size`` long and the manifest of the ciphertext is an ordinary manifest.

The file's name, size and plaintext SHA-256 travel in the manifest's ``sealed`` field,
encrypted under the same key with a nonce no chunk uses. Holders and the tracker see sizes
and ciphertext only. Everything here is computation on values.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pshare.core.chunking import MAX_CHUNKS
from p2pshare.core.errors import IntegrityError, InvalidInput
from p2pshare.core.ids import validate_id
from p2pshare.core.links import KEY_BYTES
from p2pshare.core.manifest import validate_name

OVERHEAD = 16
"""Bytes a ciphertext chunk has beyond its plaintext (the AES-GCM tag)."""
_CHUNK_AAD = b"p2pshare-chunk-v1"
_SEAL_AAD = b"p2pshare-sealed-manifest-v1"
_SEAL_NONCE = b"\xff" * 12
"""The nonce of the sealed part: no chunk index reaches it (at most MAX_CHUNKS chunks)."""
MAX_SEALED_CHARS = 2048
ENCRYPTED_NAME = "encrypted"
"""The name the tracker lists for an encrypted file (the real one is sealed)."""


@dataclass(frozen=True)
class SealedPart:
    """What only the key holder reads: the file's name, size and plaintext SHA-256."""

    name: str
    size: int
    sha256: str


def new_file_key() -> bytes:
    """Return a fresh random 32-byte file key."""
    return secrets.token_bytes(KEY_BYTES)


def plain_chunk_size(chunk_size: int) -> int:
    """Return the plaintext bytes per chunk of an encrypted file with ``chunk_size`` chunks."""
    return chunk_size - OVERHEAD


def plain_size(cipher_size: int, chunk_size: int) -> int:
    """Return the plaintext size of an encrypted file of ``cipher_size`` bytes."""
    chunks = -(-cipher_size // chunk_size)
    return cipher_size - chunks * OVERHEAD


def _nonce(index: int) -> bytes:
    if not 0 <= index < MAX_CHUNKS:
        raise InvalidInput(f"chunk index {index} is out of range")
    return index.to_bytes(12, "big")


def _aead(key: bytes) -> AESGCM:
    if len(key) != KEY_BYTES:
        raise InvalidInput(f"a file key is {KEY_BYTES} bytes, not {len(key)}")
    return AESGCM(key)


def encrypt_chunk_into(
    key: bytes, index: int, plain: bytes | bytearray | memoryview, out: memoryview
) -> memoryview:
    """Encrypt chunk ``index`` of a file under ``key`` (same input, same output) into the
    start of ``out`` (at least ``len(plain) + OVERHEAD`` bytes); return the view of ``out``
    that holds it. Into a reused buffer: no fresh allocation of a chunk's size per chunk (see
    ``storage.hasher._ingest_pieces``)."""
    view = out[: len(plain) + OVERHEAD]
    _aead(key).encrypt_into(_nonce(index), plain, _CHUNK_AAD, view)
    return view


def decrypt_chunk_into(
    key: bytes, index: int, cipher: bytes | bytearray | memoryview, out: memoryview
) -> memoryview:
    """Decrypt chunk ``index`` into the start of ``out`` (at least ``len(cipher) - OVERHEAD``
    bytes); return the view of ``out`` that holds the plaintext. Raises
    :class:`IntegrityError` when ``key`` does not open it (a wrong key, or bytes changed)."""
    if len(cipher) < OVERHEAD:
        raise IntegrityError(f"chunk {index} is shorter than its tag")
    view = out[: len(cipher) - OVERHEAD]
    try:
        _aead(key).decrypt_into(_nonce(index), cipher, _CHUNK_AAD, view)
    except InvalidTag:
        raise IntegrityError(f"chunk {index} does not decrypt with this key") from None
    return view


def seal(key: bytes, part: SealedPart) -> str:
    """Return ``part`` encrypted under ``key``, as base64url text for the manifest."""
    doc = json.dumps(
        {"name": part.name, "size": part.size, "sha256": part.sha256}, separators=(",", ":")
    ).encode()
    box = _aead(key).encrypt(_SEAL_NONCE, doc, _SEAL_AAD)
    return base64.urlsafe_b64encode(box).decode().rstrip("=")


def unseal(key: bytes, text: str) -> SealedPart:
    """Return the sealed part of a manifest; raise :class:`IntegrityError` when ``key`` does not
    open it (the wrong key for this file) and :class:`InvalidInput` when it is malformed."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_SEALED_CHARS:
        raise InvalidInput("the manifest's sealed part is malformed")
    try:
        box = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInput("the manifest's sealed part is not base64url") from None
    try:
        doc = json.loads(_aead(key).decrypt(_SEAL_NONCE, box, _SEAL_AAD))
    except InvalidTag:
        raise IntegrityError("this key does not open the file (wrong key for this file)") from None
    except (ValueError, RecursionError):
        raise InvalidInput("the manifest's sealed part is not valid JSON") from None
    try:
        size = doc["size"]
        if type(size) is not int or size < 0:
            raise InvalidInput("the sealed size is not a byte count")
        return SealedPart(validate_name(doc["name"]), size, validate_id(doc["sha256"], "sha256"))
    except (KeyError, TypeError):
        raise InvalidInput("the manifest's sealed part lacks a field") from None
