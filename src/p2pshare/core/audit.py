"""The audit proof: HMAC-SHA256 keyed by a fresh nonce over a chunk's bytes (pure).

A holder proves it still has a chunk by answering ``HMAC-SHA256(key=nonce, bytes)`` for a
nonce it has never seen; another holder computes the same from its own copy. The nonce is 32
random bytes, so an answer cannot be precomputed or replayed, and computing it needs every
byte. :class:`ProofHasher` also hashes the bytes with SHA-256, so the side computing the
expected answer checks its own copy against the chunk id in the same pass.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_nonce() -> str:
    """Return a fresh nonce: 32 random bytes as 64 lowercase hex characters."""
    return secrets.token_hex(32)


class ProofHasher:
    """Feed a chunk's bytes piece by piece; get the audit answer and the chunk's SHA-256."""

    def __init__(self, nonce: str) -> None:
        self._mac = hmac.new(bytes.fromhex(nonce), digestmod=hashlib.sha256)
        self._sha = hashlib.sha256()

    def update(self, piece: bytes | bytearray | memoryview) -> None:
        """Add the next piece of the chunk."""
        self._mac.update(piece)
        self._sha.update(piece)

    def answer(self) -> str:
        """Return HMAC-SHA256(key=nonce, bytes so far) as hex."""
        return self._mac.hexdigest()

    def chunk_id(self) -> str:
        """Return the SHA-256 of the bytes so far (the chunk id they should match)."""
        return self._sha.hexdigest()


def proof(nonce: str, data: bytes | bytearray | memoryview) -> str:
    """Return the audit answer for ``data`` in one call."""
    h = ProofHasher(nonce)
    h.update(data)
    return h.answer()
