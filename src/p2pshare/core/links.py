"""Share links: how an owner hands out a file, with the key of a private one.

A link is ``p2pshare://FILE_ID`` for a public file and ``p2pshare://FILE_ID#KEY`` for a
private (encrypted) one. ``FILE_ID`` is the 64-hex file id the tracker knows; ``KEY`` is the
file's 32-byte key in unpadded base64url (43 characters). The key sits after ``#`` as in a URL
fragment: it is never sent to the tracker or to a holder. A bare file id is accepted wherever a
link is, and means "no key".
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from p2pshare.core.errors import InvalidInput
from p2pshare.core.ids import validate_id

SCHEME = "p2pshare://"
KEY_BYTES = 32
MAX_LINK_CHARS = 200
"""Longer input is refused before it is looked at (a link is about 120 characters)."""
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}")


class InvalidLink(InvalidInput):
    """A share link that does not parse; nothing was fetched."""

    code = "invalid-link"


@dataclass(frozen=True)
class ShareLink:
    """A parsed link: the file id and, for a private file, its key."""

    file_id: str
    key: bytes | None = None

    def __str__(self) -> str:
        return format_link(self.file_id, self.key)


def encode_key(key: bytes) -> str:
    """Return ``key`` (32 bytes) as unpadded base64url text; raise :class:`InvalidLink`."""
    if len(key) != KEY_BYTES:
        raise InvalidLink(f"a file key is {KEY_BYTES} bytes, got {len(key)}")
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def decode_key(text: str) -> bytes:
    """Return the 32-byte key written as ``text``; raise :class:`InvalidLink` when it is not one."""
    if _KEY_RE.fullmatch(text) is None:
        raise InvalidLink("the key after '#' must be 43 base64url characters")
    try:
        key = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        raise InvalidLink("the key after '#' is not base64url") from None
    if encode_key(key) != text:
        # 43 characters carry 258 bits: the last character's low bits must be zero
        raise InvalidLink("the key after '#' is not a canonical base64url key")
    return key


def format_link(file_id: str, key: bytes | None = None) -> str:
    """Return the share link of ``file_id``, with ``key`` after ``#`` when given."""
    validate_id(file_id, "file id")
    return SCHEME + file_id if key is None else f"{SCHEME}{file_id}#{encode_key(key)}"


def parse_link(text: object) -> ShareLink:
    """Return the file id and key named by ``text`` (a share link or a bare file id).

    Raises :class:`InvalidLink` for anything else: another scheme, a bad id, a bad key, a
    string longer than :data:`MAX_LINK_CHARS`.
    """
    if not isinstance(text, str):
        raise InvalidLink("a share link must be text")
    if len(text) > MAX_LINK_CHARS:
        raise InvalidLink(f"a share link is at most {MAX_LINK_CHARS} characters")
    rest = text.strip()
    if rest.startswith(SCHEME):
        rest = rest[len(SCHEME) :]
    elif "://" in rest:
        raise InvalidLink(f"a share link starts with {SCHEME}, got {rest.split('://')[0]!r}://")
    file_part, sep, key_part = rest.partition("#")
    file_part = file_part.rstrip("/")
    try:
        file_id = validate_id(file_part, "file id")
    except InvalidInput as exc:
        raise InvalidLink(exc.detail) from None
    if not sep:
        return ShareLink(file_id)
    return ShareLink(file_id, decode_key(key_part))
