"""How long a client may take to send a request: the rules against slow senders.

A slow-loris client opens a connection and sends its request a byte at a time, so that it
holds a connection (and a slot of the server's) for ever at almost no cost. Two rules bound it:

- a request head (request line and headers) must be complete within ``header_timeout``
  seconds of its start: the connection opening, or the first byte of the next request on a
  kept-alive connection, which may wait for that byte ``idle_timeout`` seconds after the
  previous response ended (at least ``header_timeout``; longer, so that a server set to cut
  heads off quickly still keeps an idle connection longer than its clients do);
- a body must keep a pace (:class:`BodyPace`): each :data:`BODY_WINDOW` bytes of it (the last
  window: the rest) must arrive within ``body_timeout`` seconds of waiting for them. Silence
  ends a body as surely as a dribble of a few bytes a second; time in which the server itself
  did not read (its app was busy) does not count against the client.

:class:`ReadDeadline` keeps these rules for one connection as its requests come and go, and
says when it must be closed. Pure: the caller passes the time and owns the timer.
"""

from __future__ import annotations

import enum

BODY_WINDOW = 64 * 1024
"""Bytes of a body that must arrive within one ``body_timeout``."""


class BodyPace:
    """Each ``window`` bytes of a body must arrive within ``timeout`` seconds of waiting."""

    def __init__(self, timeout: float, window: int = BODY_WINDOW) -> None:
        if timeout <= 0 or window <= 0:
            raise ValueError("timeout and window must be > 0")
        self.timeout = timeout
        self.window = window
        self._bytes = 0
        self._waited = 0.0

    def allowance(self) -> float:
        """Return the seconds the current window may still wait for bytes (0.0: out of time)."""
        return max(0.0, self.timeout - self._waited)

    def record(self, nbytes: int, waited: float) -> None:
        """Count ``nbytes`` that arrived after ``waited`` seconds of waiting for them."""
        self._waited += max(0.0, waited)
        self._bytes += nbytes
        if self._bytes >= self.window:
            self.restart()

    def restart(self) -> None:
        """Start a new window (nothing received or waited for in it yet)."""
        self._bytes = 0
        self._waited = 0.0


class Phase(enum.Enum):
    """Where a connection is in its current request."""

    IDLE = "idle"
    """a kept-alive connection waits for its next request: due ``idle_timeout`` after the
    previous response ended"""
    HEAD = "head"
    """receiving a request head: due ``header_timeout`` after it started (the connection
    opened, or the request's first byte came)"""
    BODY = "body"
    """receiving a body: due when its :class:`BodyPace` runs out"""
    HANDLING = "handling"
    """the request is read and the server answers it: no deadline"""


class ReadDeadline:
    """The deadline of one connection's reads, as its requests go by.

    Events, as the server's parser reports them: :meth:`message_begin`, :meth:`head_done`,
    :meth:`body`, :meth:`message_done`, :meth:`response_done`; :meth:`paused` when the server
    was not reading for its own reasons. :meth:`due` is when the connection must be closed
    unless more happens first (None: no deadline). ``idle_timeout`` is ``header_timeout``
    when not given, and never less.
    """

    def __init__(
        self,
        header_timeout: float,
        body_timeout: float,
        now: float,
        idle_timeout: float | None = None,
    ) -> None:
        if header_timeout <= 0:
            raise ValueError("header_timeout must be > 0")
        self.header_timeout = header_timeout
        self.idle_timeout = max(header_timeout, idle_timeout or 0.0)
        self._pace = BodyPace(body_timeout)
        self.phase = Phase.HEAD
        self._head_started = now
        self._idle_started = now
        self._last = now
        self._answered = False
        self._next_begun = False

    def due(self) -> float | None:
        """Return when the connection must be closed unless more arrives (None: never)."""
        if self.phase is Phase.IDLE:
            return self._idle_started + self.idle_timeout
        if self.phase is Phase.HEAD:
            return self._head_started + self.header_timeout
        if self.phase is Phase.BODY:
            return self._last + self._pace.allowance()
        return None

    def expired(self, now: float) -> bool:
        """Return whether the deadline has passed at ``now``."""
        due = self.due()
        return due is not None and now >= due

    def message_begin(self, now: float) -> None:
        """The first byte of a request came: an idle connection's head is due from now (one
        that comes while the request before it is answered starts when that answer is out)."""
        if self.phase is Phase.IDLE:
            self.phase = Phase.HEAD
            self._head_started = now
        elif self.phase is Phase.HANDLING:
            self._next_begun = True

    def head_done(self, now: float) -> None:
        """A request head is complete: its body (if any) must now keep the pace."""
        self.phase = Phase.BODY
        self._answered = False
        self._pace.restart()
        self._last = now

    def body(self, nbytes: int, now: float) -> None:
        """``nbytes`` of the body arrived at ``now``."""
        if self.phase is Phase.BODY:
            self._pace.record(nbytes, now - self._last)
            self._last = now

    def paused(self, now: float) -> None:
        """The server did not read until ``now`` for its own reasons (its app is behind on the
        body, or still answering an earlier request): that time is not the client's, so the
        current body window, or the head, starts again."""
        if self.phase is Phase.BODY:
            self._pace.restart()
            self._last = now
        elif self.phase is Phase.HEAD:
            self._head_started = now

    def message_done(self, now: float) -> None:
        """The whole request is read: no deadline while it is answered (if it was answered
        already, the connection waits for the next request from now)."""
        if self._answered:
            self._next(now)
        else:
            self.phase = Phase.HANDLING

    def response_done(self, now: float) -> None:
        """The response went out: the connection waits for the next request from now (or,
        when the body is still arriving, once it has)."""
        if self.phase is Phase.HANDLING:
            self._next(now)
        elif self.phase is Phase.BODY:
            self._answered = True

    def _next(self, now: float) -> None:
        """Wait for the next request; its head is due at once when its first byte came."""
        self._answered = False
        if self._next_begun:
            self._next_begun = False
            self.phase = Phase.HEAD
            self._head_started = now
        else:
            self.phase = Phase.IDLE
            self._idle_started = now
