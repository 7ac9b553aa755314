"""Who owns which bytes of a store's quota: stored chunks, puts in flight, and reservations.

The one rule, checked on every claim::

    used + in_flight + sum(unclaimed bytes of live reservations) <= quota

A put claims its bytes before it writes them (all at once for a ``bytes`` body, piece by piece
for a stream). A claim without a reservation draws from the free space; a claim under a
reservation moves bytes from that reservation's unclaimed remainder into flight, so it never
changes the total. When the chunk is durable the claim is settled (in flight -> used); when the
put fails it is refunded. A reservation whose expiry has passed (by the injected clock) stops
counting at once, whether or not it has been dropped yet; bytes already in flight under it stay
counted until their put ends.

Pure bookkeeping: no I/O, no awaits. Every method runs to completion on the event loop thread,
so each one is atomic with respect to every other task and no lock is needed around it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from p2pshare.core.errors import (
    InvalidInput,
    InvalidSize,
    QuotaExceeded,
    ReservationError,
    ReservationExpired,
)
from p2pshare.core.sizes import format_size

MAX_UPLOAD_ID_LENGTH = 128


@dataclass(frozen=True)
class Reservation:
    """A promise of ``nbytes`` of this store to one upload, until ``expires_at``."""

    reservation_id: str
    """uuid4 hex, made by the store; the handle a pusher quotes with each put."""
    upload_id: str
    """the caller's name for the upload the space is held for."""
    nbytes: int
    """bytes promised."""
    used: int
    """bytes of chunks already stored under this reservation."""
    expires_at: float
    """clock time (seconds) after which the promise lapses and its space is free again."""

    @property
    def remaining(self) -> int:
        """Return the promised bytes not yet used by a stored chunk."""
        return self.nbytes - self.used


@dataclass
class Claim:
    """The bytes one put has claimed so far, and under which reservation (None: free space)."""

    reservation_id: str | None
    nbytes: int = 0


@dataclass
class _Entry:
    upload_id: str
    nbytes: int
    used: int
    expires_at: float
    in_flight: int = 0

    def unclaimed(self) -> int:
        return max(0, self.nbytes - self.used - self.in_flight)

    def snapshot(self, reservation_id: str) -> Reservation:
        return Reservation(reservation_id, self.upload_id, self.nbytes, self.used, self.expires_at)


def validate_quota(quota: int) -> int:
    """Return ``quota`` when it is a whole number of bytes >= 0; raise :class:`InvalidSize`."""
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise InvalidSize(f"quota must be a whole number of bytes >= 0, got {quota!r}")
    return quota


class Ledger:
    """The quota accounting of one store (see the module docstring for the rule it keeps)."""

    def __init__(
        self,
        quota: int,
        clock: Callable[[], float],
        *,
        used: int = 0,
        reservations: Iterable[Reservation] = (),
    ) -> None:
        self._quota = validate_quota(quota)
        self._clock = clock
        self._used = used
        self._in_flight = 0
        self._entries: dict[str, _Entry] = {
            r.reservation_id: _Entry(r.upload_id, r.nbytes, r.used, r.expires_at)
            for r in reservations
        }

    # -- figures ---------------------------------------------------------------------------

    @property
    def quota(self) -> int:
        """Return the bytes this store offers."""
        return self._quota

    @property
    def used(self) -> int:
        """Return the bytes of the chunks stored."""
        return self._used

    def reserved(self) -> int:
        """Return the bytes live reservations still hold (their ``remaining``, summed)."""
        now = self._clock()
        return sum(max(0, e.nbytes - e.used) for e in self._entries.values() if e.expires_at > now)

    def free(self) -> int:
        """Return the bytes a put without a reservation, or a new reservation, may still take."""
        now = self._clock()
        held = sum(e.unclaimed() for e in self._entries.values() if e.expires_at > now)
        return max(0, self._quota - self._used - self._in_flight - held)

    # -- claims of one put -----------------------------------------------------------------

    def claim(self, claim: Claim, nbytes: int) -> None:
        """Add ``nbytes`` to ``claim``, or raise and change nothing.

        Raises :class:`QuotaExceeded` when a claim without a reservation does not fit the free
        space, :class:`ReservationError` when the reservation is unknown or has too few unclaimed
        bytes, and :class:`ReservationExpired` when it has lapsed.
        """
        if claim.reservation_id is None:
            free = self.free()
            if nbytes > free:
                raise QuotaExceeded(
                    f"no room for {format_size(nbytes)} more: {format_size(free)} free "
                    f"of {format_size(self._quota)}"
                )
        else:
            entry = self._live_entry(claim.reservation_id)
            if nbytes > entry.unclaimed():
                raise ReservationError(
                    f"reservation {claim.reservation_id} has {format_size(entry.unclaimed())} "
                    f"left, the put needs more"
                )
            entry.in_flight += nbytes
        self._in_flight += nbytes
        claim.nbytes += nbytes

    def refund(self, claim: Claim) -> None:
        """Give back every byte of a failed put's ``claim``."""
        self._in_flight -= claim.nbytes
        entry = self._entries.get(claim.reservation_id or "")
        if entry is not None:
            entry.in_flight -= claim.nbytes
        claim.nbytes = 0

    def settle(self, claim: Claim) -> Reservation | None:
        """Count a stored chunk's ``claim`` as used.

        Returns the reservation it drew from, updated, when that reservation is still known
        (so the caller can persist the new ``used``); None otherwise.
        """
        self._in_flight -= claim.nbytes
        self._used += claim.nbytes
        entry = self._entries.get(claim.reservation_id or "")
        if entry is None:
            return None
        entry.in_flight -= claim.nbytes
        entry.used += claim.nbytes
        return entry.snapshot(claim.reservation_id or "")

    def add_used(self, nbytes: int) -> None:
        """Count ``nbytes`` of chunks found on disk as used."""
        self._used += nbytes

    def remove_used(self, nbytes: int) -> None:
        """Stop counting ``nbytes`` of a deleted or quarantined chunk."""
        self._used = max(0, self._used - nbytes)

    # -- reservations ----------------------------------------------------------------------

    def reserve(self, upload_id: str, nbytes: int, ttl: float) -> Reservation:
        """Return a new reservation of ``nbytes`` for ``upload_id`` lasting ``ttl`` seconds.

        Raises :class:`InvalidInput` for an empty, over-long or unprintable upload id, a size
        that is not a positive whole number or a ttl that is not a positive finite number, and
        :class:`QuotaExceeded` when the free space is short.
        """
        if (
            not isinstance(upload_id, str)
            or not 0 < len(upload_id) <= MAX_UPLOAD_ID_LENGTH
            or not upload_id.isprintable()
        ):
            raise InvalidInput(
                f"upload id must be 1 to {MAX_UPLOAD_ID_LENGTH} printable characters, "
                f"got {upload_id!r:.80}"
            )
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes <= 0:
            raise InvalidSize(f"a reservation must be a positive number of bytes, got {nbytes!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
            raise InvalidInput(f"a reservation's ttl must be positive seconds, got {ttl!r}")
        free = self.free()
        if nbytes > free:
            raise QuotaExceeded(
                f"cannot reserve {format_size(nbytes)}: {format_size(free)} free "
                f"of {format_size(self._quota)}"
            )
        reservation_id = uuid.uuid4().hex
        entry = _Entry(upload_id, nbytes, 0, self._clock() + ttl)
        self._entries[reservation_id] = entry
        return entry.snapshot(reservation_id)

    def get(self, reservation_id: str) -> Reservation:
        """Return the live reservation ``reservation_id``.

        Raises :class:`ReservationError` when it is unknown and :class:`ReservationExpired`
        when it has lapsed.
        """
        return self._live_entry(reservation_id).snapshot(reservation_id)

    def drop(self, reservation_id: str) -> Reservation:
        """Forget ``reservation_id`` (live or lapsed) and return it as it was.

        Its unclaimed bytes are free at once; bytes of puts in flight under it stay counted
        until those puts end. Raises :class:`ReservationError` when it is unknown.
        """
        entry = self._entries.pop(reservation_id, None)
        if entry is None:
            raise ReservationError(f"unknown reservation {reservation_id!r:.80}")
        return entry.snapshot(reservation_id)

    def expired(self) -> list[str]:
        """Return the ids of the reservations whose expiry has passed."""
        now = self._clock()
        return [rid for rid, e in self._entries.items() if e.expires_at <= now]

    def _live_entry(self, reservation_id: str) -> _Entry:
        entry = self._entries.get(reservation_id)
        if entry is None:
            raise ReservationError(f"unknown reservation {reservation_id!r:.80}")
        if entry.expires_at <= self._clock():
            raise ReservationExpired(f"reservation {reservation_id} has expired")
        return entry
