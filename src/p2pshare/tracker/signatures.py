"""Signature checks on another core: the tracker's checker process.

The Ed25519 check of a signed request (about 45 us) was a third of the tracker's CPU per
announce, all of it on the event loop, while the machine's other core had room. So the loop
hands the checks to a process of its own (:mod:`p2pshare.security.checker`, started with the
tracker when the machine has more than one core): the checks of the requests read in one turn
of the loop go down its pipe as one frame (:meth:`SignatureChecks.submit`), and the verdicts
come back in order and are handed to their requests. Everything else about a signed request
(the header, the key, the time, the replay guard) stays on the loop.

When the process is not running (one core, not started yet, stopped, it could not start,
it died or it answered nothing for :data:`STALL_SECONDS`: logged), a check is made on the loop
at once, as before; the checks it had not answered yet are made on the loop then, so no
request waits for a verdict that will not come.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from p2pshare.security.checker import MAX_BATCH, MAX_MESSAGE, frame
from p2pshare.security.signing import Unchecked

log = logging.getLogger(__name__)

Verdict = Callable[[bool], None]
"""Called on the loop with whether the signature matched."""

CHECKER = [sys.executable, "-m", "p2pshare.security.checker"]
STOP_TIMEOUT = 5.0
"""Seconds :meth:`SignatureChecks.stop` waits for the process to end before killing it."""
STALL_SECONDS = 10.0
"""Seconds the process may go without answering while checks wait (a check takes about
45 us): past them it is killed and the checks are made on the loop."""


def worth_a_process() -> bool:
    """Return whether checks should leave the loop: only with a second core to run on."""
    return len(os.sched_getaffinity(0)) > 1


class SignatureChecks:
    """The checker process of one event loop (see the module's doc).

    :meth:`start` and :meth:`stop` on the loop; :meth:`submit` and :meth:`matches` on the
    loop's thread."""

    def __init__(self) -> None:
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._gone: asyncio.Future[None] | None = None
        self._batch: list[tuple[Unchecked, Verdict]] = []
        self._sent: deque[tuple[Unchecked, Verdict]] = deque()
        self._flushing = False
        self._progress = 0.0
        """loop time of the last answer, or of the first check sent since"""
        self._watchdog: asyncio.TimerHandle | None = None
        self.by_process = 0
        """checks answered by the process so far"""
        self.frames = 0
        """frames sent to the process so far"""

    @property
    def running(self) -> bool:
        """Whether checks go to the process now."""
        return self._stdin is not None

    async def start(self) -> None:
        """Start the process (unless the machine has one core: then checks stay inline)."""
        if self._transport is not None:
            raise RuntimeError("the signature checker is already started")
        if not worth_a_process():
            log.info("signature checks on the event loop (one core)")
            return
        loop = asyncio.get_running_loop()
        self._gone = loop.create_future()
        try:
            self._transport, _ = await loop.subprocess_exec(
                lambda: _Pipes(self), *CHECKER, stderr=None
            )
        except OSError as exc:  # no process to be had: the checks stay on the loop
            log.warning("signature checks on the event loop: no checker process (%s)", exc)
            self._gone = None
            return
        stdin = self._transport.get_pipe_transport(0)
        if stdin is None:
            raise RuntimeError("the signature checker has no input pipe")
        self._stdin = stdin  # type: ignore[assignment]  # uvloop's pipe is not the ABC's subclass
        log.info("signature checks in process %d", self._transport.get_pid())

    async def stop(self) -> None:
        """Let the process answer what it has, end it, and make any check left inline."""
        transport, gone = self._transport, self._gone
        if transport is None or gone is None:
            return
        self._flush()
        self._stdin = None  # from now on checks are inline
        stdin = transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()  # the process answers what it read, then ends at the end of its input
        try:
            await asyncio.wait_for(asyncio.shield(gone), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("the signature checker did not end in %g s: killed", STOP_TIMEOUT)
        self._lost()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport.close()  # kills it if it is still there
        self._transport = None
        log.info("signature checks: %d by the process, in %d frames", self.by_process, self.frames)

    def submit(self, pending: Unchecked, verdict: Verdict) -> None:
        """Check ``pending``; call ``verdict`` with the outcome on the loop: later, when the
        process checks it, else at once."""
        if self._stdin is None or len(pending.message) > MAX_MESSAGE:
            verdict(pending.matches())  # a message the pipe does not take is checked here
            return
        self._batch.append((pending, verdict))
        if not self._flushing:  # everything submitted in this turn of the loop goes at once
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def matches(self, pending: Unchecked) -> bool:
        """Return whether ``pending``'s signature matches."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def settle(ok: bool) -> None:
            if not future.done():  # the awaiting request may be gone (cancelled)
                future.set_result(ok)

        self.submit(pending, settle)
        return await future

    def _flush(self) -> None:
        self._flushing = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self._stdin is None:  # the process went away since these were submitted
            _deliver([(verdict, pending.matches()) for pending, verdict in batch])
            return
        loop = asyncio.get_running_loop()
        if not self._sent:
            self._progress = loop.time()
        for start in range(0, len(batch), MAX_BATCH):
            part = batch[start : start + MAX_BATCH]
            data = frame((p.header.public_key, p.header.signature, p.message) for p, _ in part)
            self._sent.extend(part)
            self.frames += 1
            self._stdin.write(data)
        if self._watchdog is None:
            self._watchdog = loop.call_later(STALL_SECONDS, self._watch)

    def _watch(self) -> None:
        """Kill a process that answers nothing while checks wait (checks go inline)."""
        self._watchdog = None
        if not self._sent or self._stdin is None:
            return
        idle = asyncio.get_running_loop().time() - self._progress
        if idle < STALL_SECONDS:
            self._watchdog = asyncio.get_running_loop().call_later(
                STALL_SECONDS - idle, self._watch
            )
            return
        log.error(
            "the signature checker answered nothing for %.0f s: killed; checks are inline", idle
        )
        self._stdin = None
        if self._transport is not None:
            self._transport.kill()
        self._lost()

    def _answered(self, data: bytes) -> None:
        """Verdicts from the process, in the order their checks were sent."""
        sent = self._sent
        if len(data) > len(sent):
            log.error("the signature checker answered more than it was asked: checks are inline")
            self._stdin = None
            if self._transport is not None:
                self._transport.kill()
            self._lost()
            return
        verdicts = [(sent.popleft()[1], byte == 1) for byte in data]
        self._progress = asyncio.get_running_loop().time()
        self.by_process += len(verdicts)
        _deliver(verdicts)

    def _lost(self) -> None:
        """The process is gone (or going): make the checks it has not answered inline."""
        self._stdin = None
        left = list(self._sent) + self._batch
        self._sent.clear()
        self._batch = []
        _deliver([(verdict, pending.matches()) for pending, verdict in left])

    def _ended(self) -> None:
        """The process's output ended: every verdict it will give is in."""
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        if self._stdin is not None:  # not stopping: it died
            code = None if self._transport is None else self._transport.get_returncode()
            log.error("the signature checker ended (status %s): checks are inline now", code)
            self._lost()


class _Pipes(asyncio.SubprocessProtocol):
    """The checker's pipes: verdicts in, its exit."""

    def __init__(self, owner: SignatureChecks) -> None:
        self.owner = owner

    def pipe_data_received(self, fd: int, data: bytes | Any) -> None:
        if fd == 1:
            self.owner._answered(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.owner._ended()


def _deliver(verdicts: list[tuple[Verdict, bool]]) -> None:
    """Give each verdict to its request (one failing does not stop the rest)."""
    for verdict, ok in verdicts:
        try:
            verdict(ok)
        except Exception:
            log.exception("a signature verdict could not be delivered")
