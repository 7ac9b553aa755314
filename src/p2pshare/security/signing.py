"""Signed requests: who sent a request, proved with the sender's Ed25519 key.

A request that changes something (an announce, a registration, a report, a delete, a chunk
push) carries one header::

    Authorization: P2P-Ed25519 node=ID,key=PUBKEY,time=MS,nonce=HEX,sig=SIG

``key`` is the sender's raw public key in base64url and ``node`` its id (the hash of the key,
:func:`p2pshare.core.ids.node_id_of`), so a receiver checks a signature without asking anyone
for the key. ``sig`` is the Ed25519 signature over :func:`canonical` of the method, the path
with its query exactly as sent, the time, the nonce, the SHA-256 of the body and the node id.

A receiver refuses (:class:`Unauthenticated`, nothing changed) a missing or malformed header,
a key that does not hash to the node id, a bad signature, a time outside its window
(:data:`WINDOW_SECONDS` either way) and a (node, nonce) pair it has seen within the window
(:class:`ReplayGuard`). Everything here is computation on values; the caller passes the clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from p2pshare.core.errors import Unauthenticated, Unavailable
from p2pshare.core.ids import is_valid_node_id, node_id_of

HEADER = "Authorization"
SCHEME = "P2P-Ed25519"
WINDOW_SECONDS = 60
"""How far a request's time may be from the receiver's clock, either way."""
MAX_HEADER_CHARS = 512
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()
WEAK_KEYS = frozenset(
    bytes.fromhex(h)
    for h in [
        "01" + "00" * 31,
        "01" + "00" * 30 + "80",
        "ee" + "ff" * 30 + "7f",
        "ee" + "ff" * 31,
        "ec" + "ff" * 30 + "7f",
        "ec" + "ff" * 31,
        "ed" + "ff" * 30 + "7f",
        "ed" + "ff" * 31,
        "00" * 32,
        "00" * 31 + "80",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ]
)
"""The encodings (canonical or not) of the 8 Ed25519 points of small order. A signature for
such a key can be made without any private key (e.g. R = identity, S = 0 verifies for every
message under the identity point), so they are refused as keys."""
KEY_CACHE_SIZE = 16_384
"""Public keys whose node id and key object :func:`verify` keeps (least recently used first
out): a key is hashed and loaded once, not on every request its node signs."""
_FIELDS = ("node", "key", "time", "nonce", "sig")
_FIELD_RE = {
    "node": re.compile(r"n[a-z2-7]{34}"),
    "key": re.compile(r"[A-Za-z0-9_-]{43}"),
    "time": re.compile(r"[0-9]{1,15}"),
    "nonce": re.compile(r"[0-9a-f]{32}"),
    "sig": re.compile(r"[A-Za-z0-9_-]{86}"),
}


class Signer(Protocol):
    """What signs a request: a node id, its raw public key and the matching private key
    (:class:`p2pshare.security.keys.Identity` is one)."""

    @property
    def node_id(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes:
        """Return the Ed25519 signature of ``data``."""
        ...


@dataclass(frozen=True)
class SignedHeader:
    """The fields of an ``Authorization: P2P-Ed25519 ...`` header, parsed but not verified."""

    node_id: str
    public_key: bytes
    time_ms: int
    nonce: str
    signature: bytes

    def render(self) -> str:
        """Return the header value (the inverse of :func:`parse_header`)."""
        return (
            f"{SCHEME} node={self.node_id},key={_b64(self.public_key)},time={self.time_ms},"
            f"nonce={self.nonce},sig={_b64(self.signature)}"
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated(f"the {what} in the signature header is not base64url") from None
    if len(raw) != size or _b64(raw) != text:
        raise Unauthenticated(f"the {what} in the signature header is not {size} bytes")
    return raw


def parse_header(value: str | None) -> SignedHeader:
    """Return the fields of a signature header; raise :class:`Unauthenticated` when it is
    missing or malformed (it is not verified here: see :func:`verify`)."""
    if not value:
        raise Unauthenticated(
            f"this request must be signed: send an '{HEADER}: {SCHEME} ...' header"
        )
    if len(value) > MAX_HEADER_CHARS:
        raise Unauthenticated(f"the signature header is longer than {MAX_HEADER_CHARS} characters")
    scheme, _, rest = value.strip().partition(" ")
    if scheme != SCHEME:
        raise Unauthenticated(f"the {HEADER} header must use the {SCHEME} scheme")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, text = part.strip().partition("=")
        if not eq or name not in _FIELD_RE or name in fields:
            raise Unauthenticated(f"the signature header has a bad field: {part.strip()[:40]!r}")
        if _FIELD_RE[name].fullmatch(text) is None:
            raise Unauthenticated(f"the signature header's {name} is malformed")
        fields[name] = text
    missing = [f for f in _FIELDS if f not in fields]
    if missing:
        raise Unauthenticated(f"the signature header lacks {', '.join(missing)}")
    return SignedHeader(
        node_id=fields["node"],
        public_key=_unb64(fields["key"], 32, "key"),
        time_ms=int(fields["time"]),
        nonce=fields["nonce"],
        signature=_unb64(fields["sig"], 64, "signature"),
    )


def canonical(
    method: str, target: str, time_ms: int, nonce: str, body_sha256: str, node_id: str
) -> bytes:
    """Return the bytes a request signature covers.

    ``target`` is the path and query exactly as on the request line (``/v1/files?x=1``);
    ``body_sha256`` is the hex SHA-256 of the body (of no bytes for a request without one).
    """
    return "\n".join(
        ["p2pshare-request-v1", method.upper(), target, str(time_ms), nonce, body_sha256, node_id]
    ).encode("utf-8")


def body_sha256(body: bytes | bytearray | memoryview) -> str:
    """Return the hex SHA-256 a signature covers for ``body``."""
    return hashlib.sha256(body).hexdigest()


def sign_request(
    identity: Signer, method: str, target: str, body_sha256: str, *, now: float
) -> dict[str, str]:
    """Return the header that signs a request as ``identity`` at time ``now`` (seconds)."""
    time_ms = int(now * 1000)
    nonce = secrets.token_hex(16)
    message = canonical(method, target, time_ms, nonce, body_sha256, identity.node_id)
    header = SignedHeader(
        node_id=identity.node_id,
        public_key=identity.public_key,
        time_ms=time_ms,
        nonce=nonce,
        signature=identity.sign(message),
    )
    return {HEADER: header.render()}


def verify(
    value: str | None,
    method: str,
    target: str,
    body_sha256: str,
    *,
    now: float,
    window: float = WINDOW_SECONDS,
) -> SignedHeader:
    """Return the checked header of a request; raise :class:`Unauthenticated` when the
    header is missing or malformed, the key is not the node's, the time is outside
    ``window`` seconds of ``now``, or the signature does not match."""
    pending = unchecked(value, method, target, body_sha256, now=now, window=window)
    if not pending.matches():
        raise Unauthenticated(BAD_SIGNATURE)
    return pending.header


BAD_SIGNATURE = "the request's signature does not match its contents"


@dataclass(frozen=True, slots=True)
class Unchecked:
    """A request's signature header that passed every check of :func:`verify` but the
    signature's own (the costly one, which :meth:`matches` makes)."""

    header: SignedHeader
    message: bytes
    """what the signature must sign: :func:`canonical` of the request"""

    def matches(self) -> bool:
        """Return whether the header's signature signs :attr:`message` with its key."""
        return signs(self.header.public_key, self.header.signature, self.message)


def signs(key: bytes, signature: bytes, message: bytes) -> bool:
    """Return whether ``signature`` signs ``message`` with the raw public ``key``.

    Checked with libsodium (PyNaCl) rather than OpenSSL (cryptography, which makes the keys
    and signs): the same Ed25519, at about half the CPU per check here (45 us against 91),
    and a check per signed request is the largest cost of an announce at the tracker."""
    try:
        crypto_sign_open(signature + message, key)
    except BadSignatureError:
        return False
    return True


def unchecked(
    value: str | None,
    method: str,
    target: str,
    body_sha256: str,
    *,
    now: float,
    window: float = WINDOW_SECONDS,
) -> Unchecked:
    """Return the header of a request, with what its signature must sign; raise
    :class:`Unauthenticated` when the header is missing or malformed, the key is not the
    node's or the time is outside ``window`` seconds of ``now``. The signature itself is not
    checked yet: :meth:`Unchecked.matches` does that (:func:`verify` does both)."""
    header = parse_header(value)
    key_node_id = _public_key(header.public_key)
    if key_node_id != header.node_id or not is_valid_node_id(header.node_id):
        raise Unauthenticated(f"the key in the signature header is not node {header.node_id}'s")
    if header.public_key in WEAK_KEYS:
        raise Unauthenticated("the key in the signature header is a weak (small-order) key")
    skew = header.time_ms / 1000 - now
    if abs(skew) > window:
        raise Unauthenticated(
            f"the request's time is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
            f"this clock (at most {window:.0f} s): check the sender's clock"
        )
    message = canonical(method, target, header.time_ms, header.nonce, body_sha256, header.node_id)
    return Unchecked(header, message)


@lru_cache(maxsize=KEY_CACHE_SIZE)
def _public_key(raw: bytes) -> str:
    """Return the node id of the raw public key ``raw`` (a pure function of ``raw``, so it is
    kept for the keys seen most recently)."""
    return node_id_of(raw)


class ReplayGuard:
    """Remembers the (node, nonce) of each accepted request for ``2 * window`` seconds, so the
    same signed request is accepted once.

    Memory is bounded: past ``max_entries`` live entries a new request is refused with
    :class:`Unavailable` (the sender retries later) rather than forgetting one early.
    """

    def __init__(self, *, window: float = WINDOW_SECONDS, max_entries: int = 500_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: dict[tuple[str, str], float] = {}
        self._order: deque[tuple[float, tuple[str, str]]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, header: SignedHeader, *, now: float) -> None:
        """Remember ``header``; raise :class:`Unauthenticated` when it was seen already."""
        self._forget(now)
        key = (header.node_id, header.nonce)
        if key in self._seen:
            raise Unauthenticated("this request was already received (a replay): refused")
        if len(self._seen) >= self.max_entries:
            raise Unavailable("too many signed requests in the replay window; try again soon")
        expires = now + 2 * self.window
        self._seen[key] = expires
        self._order.append((expires, key))

    def _forget(self, now: float) -> None:
        order = self._order
        while order and order[0][0] <= now:
            _, key = order.popleft()
            self._seen.pop(key, None)
