"""The one error tree of p2pshare.

Every error the project raises on purpose is a :class:`P2PShareError`. Each class has a stable
``code`` (a short slug that never changes once published) which the HTTP layers map to the
``type`` of an ``application/problem+json`` body, and an HTTP ``status`` they use with it::

    P2PShareError
    ├── InvalidInput            bad input from the user or the network (400)
    │   ├── InvalidId           an id that is not 64 lowercase hex characters
    │   ├── InvalidSize         a size that does not parse or is out of range
    │   ├── InvalidName         a file name with path separators or control characters
    │   ├── InvalidManifest     a manifest whose fields disagree with each other
    │   ├── ConfigError         a configuration key or value that is refused
    │   ├── UnknownNode         a request names a node the tracker has never heard from
    │   └── PayloadTooLarge     a request body above the size limit (413)
    ├── Unauthenticated         a request without a valid signature, or a replayed one (401)
    ├── Forbidden               the caller may not do this, e.g. delete another's file (403)
    ├── NotFound                the thing asked for does not exist (404)
    ├── Conflict                the id is taken by something different (409)
    ├── IntegrityError          bytes that do not match the hash that names them (422)
    ├── QuotaExceeded           a write would pass the bytes the node offers (507)
    ├── ReservationError        a reservation is unknown, too small or expired (409)
    │   └── ReservationExpired  the reservation's expiry has passed (410)
    ├── StoreLocked             another process owns this data directory (409)
    ├── TooManyRequests         a source sent more requests than its rate limit (429)
    ├── Unavailable             a peer or the tracker did not answer in time (503)
    └── RemoteError             a peer answered with something we cannot use (502)

Whose fault an error is (h11's local/remote split) is the caller's to say: the same
``IntegrityError`` is a bug report about a peer when a download receives it, and a refusal when
a holder's store raises it on a push.
"""

from __future__ import annotations

from typing import ClassVar


class P2PShareError(Exception):
    """Base of every error p2pshare raises on purpose.

    ``code`` is stable and machine-readable; ``str(error)`` is the one-line human detail.
    """

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(P2PShareError):
    """Input that is malformed or out of range; nothing was changed."""

    code = "invalid-input"
    status = 400


class InvalidId(InvalidInput):
    """An id (chunk id, file id) that is not 64 lowercase hex characters."""

    code = "invalid-id"


class InvalidSize(InvalidInput):
    """A size that does not parse, is negative, or is outside the allowed range."""

    code = "invalid-size"


class InvalidName(InvalidInput):
    """A file name that is empty, too long, or holds path separators or control characters."""

    code = "invalid-name"


class InvalidManifest(InvalidInput):
    """A manifest whose fields are inconsistent or whose file id does not verify."""

    code = "invalid-manifest"


class ConfigError(InvalidInput):
    """A configuration key that is unknown or a value that is refused."""

    code = "invalid-config"


class UnknownNode(InvalidInput):
    """A request names a node (owner, holder, reporter) that has never announced itself."""

    code = "unknown-node"


class PayloadTooLarge(InvalidInput):
    """A request body larger than the receiver accepts; nothing of it was used."""

    code = "payload-too-large"
    status = 413


class Unauthenticated(P2PShareError):
    """A request whose signature is missing, wrong, stale or already seen; nothing was changed."""

    code = "unauthenticated"
    status = 401


class Forbidden(P2PShareError):
    """The caller may not do this (e.g. withdraw a file it does not own)."""

    code = "forbidden"
    status = 403


class NotFound(P2PShareError):
    """The chunk, file, node or reservation asked for does not exist."""

    code = "not-found"
    status = 404


class Conflict(P2PShareError):
    """The id is already taken by something different (another owner, another manifest)."""

    code = "conflict"
    status = 409


class IntegrityError(P2PShareError):
    """Bytes that do not hash to the id that names them."""

    code = "integrity-error"
    status = 422


class QuotaExceeded(P2PShareError):
    """A write or reservation would exceed the bytes this store offers."""

    code = "quota-exceeded"
    status = 507


class ReservationError(P2PShareError):
    """A reservation that is unknown or has too little room left for the write."""

    code = "reservation-error"
    status = 409


class ReservationExpired(ReservationError):
    """A reservation whose expiry has passed; its space has been freed."""

    code = "reservation-expired"
    status = 410


class StoreLocked(P2PShareError):
    """Another process holds the lock on this data directory."""

    code = "store-locked"
    status = 409


class TooManyRequests(P2PShareError):
    """A source passed its request rate limit; it may try again later."""

    code = "too-many-requests"
    status = 429


class Unavailable(P2PShareError):
    """A node or the tracker could not be reached, or did not answer within its timeout."""

    code = "unavailable"
    status = 503


class RemoteError(P2PShareError):
    """A node or the tracker answered, but with an error we do not know or a malformed body."""

    code = "remote-error"
    status = 502
