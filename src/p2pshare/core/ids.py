"""Content ids: the SHA-256 hex strings that name chunks and files."""

from __future__ import annotations

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
