"""Ids: the SHA-256 hex strings that name chunks and files, and the node ids made from keys."""

from __future__ import annotations

import base64
import functools
import hashlib
import re

from p2pshare.core.errors import InvalidId

ID_LENGTH = 64
_ID_RE = re.compile(r"[0-9a-f]{64}")


def is_valid_id(value: object) -> bool:
    """Return True when ``value`` is a string of exactly 64 lowercase hex characters."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` unchanged when it is a valid id; raise :class:`InvalidId` otherwise.

    ``what`` names the field in the message ("chunk id", "file id").
    """
    if not is_valid_id(value):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidId(f"{what} must be 64 lowercase hex characters, got {shown}")
    return value  # type: ignore[return-value]


def chunk_id(data: bytes | bytearray | memoryview) -> str:
    """Return the chunk id of ``data``: the SHA-256 of its bytes, as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


# --- node ids --------------------------------------------------------------------------------

NODE_ID_PREFIX = "n"
_NODE_HASH_CHARS = 32
"""base32 characters of the key hash: 160 bits."""
_NODE_CHECK_CHARS = 2
NODE_ID_LENGTH = len(NODE_ID_PREFIX) + _NODE_HASH_CHARS + _NODE_CHECK_CHARS
_NODE_ID_RE = re.compile(rf"n[a-z2-7]{{{_NODE_HASH_CHARS + _NODE_CHECK_CHARS}}}")


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_CHECK_MODULUS = 1021
"""A prime below 32**2. A single changed character changes the weighted sum by
(position) x (difference), both in 1..32 and 1..31: a nonzero amount below the modulus, so
every single-character typo, and every swap of two neighbours, changes the check."""


def _node_check(body: str) -> str:
    total = sum((i + 1) * _B32.index(c) for i, c in enumerate(body)) % _CHECK_MODULUS
    return _B32[total // 32] + _B32[total % 32]


def node_id_of(public_key: bytes) -> str:
    """Return the node id of a 32-byte Ed25519 public key.

    ``n``, then the first 160 bits of SHA-256(public key) in lowercase base32 (32 characters),
    then 2 check characters (a weighted sum modulo 1021), so a mistyped id (any one character
    changed, or two neighbours swapped) is refused rather than taken for another node.
    """
    body = _b32(hashlib.sha256(public_key).digest())[:_NODE_HASH_CHARS]
    return NODE_ID_PREFIX + body + _node_check(body)


def is_valid_node_id(value: object) -> bool:
    """Return True when ``value`` is a well-formed node id whose check characters match."""
    if not isinstance(value, str) or _NODE_ID_RE.fullmatch(value) is None:
        return False
    return _checked(value)


@functools.lru_cache(maxsize=4096)
def _checked(value: str) -> bool:
    """Whether a well-formed id's check characters match (every message names a few nodes,
    the same ones again and again: their checks are remembered)."""
    body = value[len(NODE_ID_PREFIX) : len(NODE_ID_PREFIX) + _NODE_HASH_CHARS]
    return value.endswith(_node_check(body))


def validate_node_id(value: object, what: str = "node id") -> str:
    """Return ``value`` when it is a valid node id; raise :class:`InvalidId` otherwise."""
    if not is_valid_node_id(value):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidId(
            f"{what} must be 'n' and {NODE_ID_LENGTH - 1} base32 characters with a valid "
            f"check, got {shown}"
        )
    return value  # type: ignore[return-value]
