"""The fast lanes: the two busiest requests answered without FastAPI's machinery.

Announces (every node, every heartbeat) and file details (every download, every 2 s) are most
of the tracker's requests. Routed through FastAPI, each spends more CPU in routing, dependency
solving, body handling and the exception middleware than in its own work (the Ed25519 check
aside). :class:`FastLane`, a pure ASGI middleware inside the rate and body-size limits,
answers the common case of each itself, with the same steps as the route in the same order,
through the same functions. Below it, :class:`AnnounceLaneProtocol` (uvicorn's HTTP protocol,
built by :func:`lane_protocol`) answers most announces before any ASGI cycle starts, with the
same functions again; what it does not take reaches the ASGI app as before.

``POST /v1/nodes/announce`` with a plain ``application/json`` body
(:func:`announce_signature`, the verdict of the tracker's signature checks
(:mod:`.signatures`) and :func:`~p2pshare.tracker.routes.accepted_signer`, then
:func:`announce_of`; :func:`~p2pshare.tracker.routes.record_announce`):

1. the body is read and parsed as JSON (:func:`json.loads`, as Starlette does);
2. the signature is checked (in the checker process when there is one) and the replay guard
   remembers it (401 otherwise);
3. the body is validated as a :class:`~p2pshare.core.messages.NodeAnnounce` (422 naming
   ``body.<field>`` otherwise, as FastAPI does);
4. the announce is recorded (403 when it speaks for another node) and answered.

``GET /v1/files/{file_id}`` with a well-formed file id: the repository's detail, or 404.

Anything else goes on to FastAPI untouched: another path or method, an announce in another
content type, a file id that is not well-formed, and, with the body the lane read handed on, an
announce whose body is empty or not a JSON object (FastAPI then answers exactly as it always
did). Errors of the error tree become the same problem+json as :mod:`p2pshare.tracker.problems`
makes; any other exception propagates to the app's 500 handler (below ASGI: the same 500
problem, logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from p2pshare.core.admission import ServerLimits
from p2pshare.core.errors import P2PShareError
from p2pshare.core.ids import is_valid_id
from p2pshare.core.messages import NodeAnnounce
from p2pshare.core.problems import internal_problem, problem_for_error, problem_for_validation
from p2pshare.security.signing import Unchecked
from p2pshare.tracker.guard import GuardedHttpToolsProtocol
from p2pshare.tracker.problems import problem_response
from p2pshare.tracker.routes import (
    accepted_signer,
    record_announce,
    record_known_announce,
    unchecked_signature,
)
from p2pshare.tracker.state import TrackerState

log = logging.getLogger(__name__)

ANNOUNCE_PATH = "/v1/nodes/announce"
FILES_PREFIX = "/v1/files/"
JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8"})
"""Content types of announces the lane takes (lowercased); FastAPI answers any other."""
_AUTHORIZATION = b"authorization"
_CONTENT_TYPE = b"content-type"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastLane:
    """ASGI middleware: answer plain announces and file details, pass on everything else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``scope`` when the lane takes it; else let the app answer it."""
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if (
                path == ANNOUNCE_PATH
                and method == "POST"
                and (_first_header(scope, _CONTENT_TYPE) or b"").lower() in JSON_TYPES
            ):
                await self._announce(scope, receive, send)
                return
            if (
                method == "GET"
                and path.startswith(FILES_PREFIX)
                and is_valid_id(file_id := path[len(FILES_PREFIX) :])
            ):
                await _answer(scope, receive, send, _detail(scope, file_id))
                return
        await self.app(scope, receive, send)

    async def _announce(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client went away: nobody to answer
        try:
            data = json.loads(body) if body else None
        except Exception:  # whatever it is, FastAPI answers it as it always did
            data = None
        if not isinstance(data, dict):
            await self.app(scope, _replay(body, receive), send)
            return
        await _answer(scope, receive, send, _record(scope, body, data))


async def _record(scope: Scope, body: bytes, data: dict[str, Any]) -> bytes:
    state: TrackerState = scope["app"].state.tracker
    pending = announce_signature(scope, body)
    signer = accepted_signer(state, pending, await state.signatures.matches(pending))
    return await record_announce(state, announce_of(data), signer)


def announce_signature(scope: Scope, body: bytes) -> Unchecked:
    """Return the signature header of the announce of ``scope`` (with ``body``), its
    signature not checked yet; raise :class:`Unauthenticated` when it is missing, malformed,
    of another node's key or not fresh."""
    header = _first_header(scope, _AUTHORIZATION)
    return unchecked_signature(scope, None if header is None else header.decode("latin-1"), body)


def announce_of(data: dict[str, Any]) -> NodeAnnounce:
    """Return the announce of ``data`` (a request's JSON object); raise :class:`_Invalid`
    with FastAPI's error entries when it is not a valid announce."""
    try:
        return NodeAnnounce.model_validate(data, from_attributes=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise _Invalid(errors) from None


async def _detail(scope: Scope, file_id: str) -> bytes:
    state: TrackerState = scope["app"].state.tracker
    return (await state.repo.file_detail(file_id)).model_dump_json().encode()


class _Invalid(Exception):
    """A body that failed validation, with FastAPI's error entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("request validation failed")
        self.errors = errors


async def _answer(scope: Scope, receive: Receive, send: Send, work: Any) -> None:
    """Send the JSON that awaiting ``work`` gives (200), or the problem for its error."""
    try:
        content: bytes = await work
    except (P2PShareError, _Invalid) as exc:
        await problem_of(exc)(scope, receive, send)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(content)).encode()), *_JSON_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": content})


def problem_of(exc: P2PShareError | _Invalid) -> Response:
    """Return the problem+json response for an error of the tree or a failed validation."""
    if isinstance(exc, _Invalid):
        return problem_response(problem_for_validation(exc.errors))
    return problem_response(problem_for_error(exc))


def _first_header(scope: Scope, name: bytes) -> bytes | None:
    """Return the value of the first header ``name`` (lowercase) of ``scope``, or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """Return the whole request body, or None when the client disconnects first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Return a receive channel that gives ``body`` once, then what ``receive`` gives."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


# --- announces below ASGI ------------------------------------------------------------------

LANE_MAX_BODY = 64 * 1024
"""Bytes of a declared announce body the protocol lane takes (an announce is some 300);
a larger or chunked body goes through ASGI and :class:`~p2pshare.tracker.limits.BodySizeLimit`."""


@dataclass
class LaneCounts:
    """What the announce lane of one server did (logged at shutdown; read by tests)."""

    answered: int = 0
    """announces answered below ASGI (including their 401/403/422/429 problems)"""
    handed_on: int = 0
    """announces it took whose body was not a JSON object: answered by FastAPI"""


class AnnounceLaneProtocol(GuardedHttpToolsProtocol):
    """uvicorn's protocol (with :mod:`.guard`'s limits) answering plain announces itself.

    An announce costs the tracker less than the ASGI cycle around it: a task, the request and
    response messages, five middleware layers and uvicorn's response writer. This protocol
    takes a ``POST /v1/nodes/announce`` with a JSON content type and a declared body of at most
    :data:`LANE_MAX_BODY` bytes, when no ``Expect: 100-continue`` is pending and the transport
    is not paused for writing (a client that does not read its answers meets the ASGI cycle's
    back-pressure); when the whole body is in (for a pipelined announce, read whole while the
    one before it waited for its answer: when that answer is written, in the next turn of the
    loop):

    1. a body that is not a JSON object is handed to the app as it is (FastAPI answers it);
    2. the source's rate is counted once, on the app's :class:`~.guard.RateGate` (429);
    3. :func:`announce_signature` runs right away and the signature goes to the tracker's
       signature checks; with their verdict (a callback on the loop, no task),
       :func:`~p2pshare.tracker.routes.accepted_signer`, :func:`announce_of` and
       :func:`~p2pshare.tracker.routes.record_known_announce` run; only a node whose row must
       be written first waits for the database, in a task, through
       :func:`~p2pshare.tracker.routes.record_announce`;
    4. the answer, or the same problem+json FastAPI would send, is written to the transport
       with uvicorn's default headers and keep-alive rules.

    The rest goes through the ASGI app untouched. Build the class with :func:`lane_protocol`.
    This uses uvicorn's protocol internals (``_start_asgi_task``, the request cycle's fields):
    uvicorn is pinned to the minor version it was written against.
    """

    app_ref: ClassVar[Any] = None
    """the FastAPI app: ``state.tracker`` (made by its lifespan) and ``state.rate_gate``"""
    counts: ClassVar[LaneCounts] = LaneCounts()

    _lane: Any = None
    """the request cycle whose announce the lane took, until its body is in"""

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """Take a plain announce for the lane; start the app on anything else."""
        # while the client is not reading its answers, the ASGI cycle waits for the transport
        # to drain before the next pipelined request is read: the lane would not wait
        if app is self.app and not self.flow.write_paused and _lane_takes(cycle):
            if cycle.more_body:  # answered when its body is in (on_message_complete)
                self._lane = cycle
            else:  # a pipelined announce, read whole while the one before it was answered
                self.loop.call_soon(self._announce, cycle)  # not nested in that answer
            return
        super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        """The body is in: answer the announce the lane took."""
        super().on_message_complete()
        cycle, self._lane = self._lane, None
        if cycle is not None and cycle is self.cycle and not cycle.response_complete:
            self._announce(cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget an announce whose body never came in full, then close as uvicorn does."""
        self._lane = None
        super().connection_lost(exc)

    def _announce(self, cycle: Any) -> None:
        body = bytes(cycle.body)
        cycle.body = bytearray()
        try:
            data = json.loads(body) if body else None
        except Exception:  # whatever it is, FastAPI answers it as it always did
            data = None
        if not isinstance(data, dict):
            self.counts.handed_on += 1
            cycle.body = bytearray(body)
            super()._start_asgi_task(cycle, self.app)
            return
        self.counts.answered += 1
        app = self.app_ref
        refusal = app.state.rate_gate.refusal(cycle.scope)
        if refusal is not None:
            self._respond(cycle, refusal.status_code, refusal.raw_headers, bytes(refusal.body))
            return
        state: TrackerState = app.state.tracker
        try:
            pending = announce_signature(cycle.scope, body)
        except Exception as exc:  # each becomes its answer, as in the app
            self._fail(cycle, exc)
            return
        state.signatures.submit(pending, partial(self._signed, cycle, state, pending, data))

    def _signed(
        self,
        cycle: Any,
        state: TrackerState,
        pending: Unchecked,
        data: dict[str, Any],
        matches: bool,
    ) -> None:
        """The signature checks' verdict on the announce of ``cycle``: finish it."""
        try:
            signer = accepted_signer(state, pending, matches)
            announce = announce_of(data)
            content = record_known_announce(state, announce, signer)
        except Exception as exc:  # each becomes its answer, as in the app
            self._fail(cycle, exc)
            return
        if content is None:  # a new or changed node: its row is written before the answer
            self._start_task(self._record(cycle, state, announce, signer))
            return
        self._respond(cycle, 200, _JSON_HEADERS, content)

    def _start_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(work)
        task.add_done_callback(self.tasks.discard)  # uvicorn waits for these on shutdown
        self.tasks.add(task)

    async def _record(
        self, cycle: Any, state: TrackerState, announce: NodeAnnounce, signer: str
    ) -> None:
        try:
            content = await record_announce(state, announce, signer)
        except Exception as exc:  # each becomes its answer, as in the app
            self._fail(cycle, exc)
            return
        self._respond(cycle, 200, _JSON_HEADERS, content)

    def _fail(self, cycle: Any, exc: Exception) -> None:
        """Answer ``exc`` as the app does: its problem, or a logged 500."""
        if isinstance(exc, P2PShareError | _Invalid):
            r = problem_of(exc)
        else:
            log.error("unexpected error on POST %s", ANNOUNCE_PATH, exc_info=exc)
            r = problem_response(internal_problem("tracker"))
        self._respond(cycle, r.status_code, r.raw_headers, bytes(r.body))

    def _respond(
        self, cycle: Any, status: int, headers: list[tuple[bytes, bytes]], content: bytes
    ) -> None:
        """Write the whole response as uvicorn's cycle would, then finish the request."""
        if cycle.disconnected:
            return
        out = [STATUS_LINE[status]]
        for name, value in cycle.default_headers:
            out += [name, b": ", value, b"\r\n"]
        for name, value in headers:
            if name == b"content-length":
                continue  # written below, from the content itself
            if name == b"connection" and b"close" in value.lower():
                cycle.keep_alive = False
            out += [name, b": ", value, b"\r\n"]
        out += [b"content-length: ", str(len(content)).encode(), b"\r\n"]
        if not cycle.keep_alive:
            out.append(b"connection: close\r\n")
        out += [b"\r\n", content]
        cycle.response_started = cycle.response_complete = True
        cycle.message_event.set()
        self.transport.write(b"".join(out))
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()


def _lane_takes(cycle: Any) -> bool:
    scope = cycle.scope
    if (
        scope["path"] != ANNOUNCE_PATH
        or scope["method"] != "POST"
        or scope["query_string"]
        or cycle.waiting_for_100_continue
        or (_first_header(scope, _CONTENT_TYPE) or b"").lower() not in JSON_TYPES
    ):
        return False
    length = _first_header(scope, b"content-length")
    return (
        length is not None
        and length.isdigit()
        and int(length) <= LANE_MAX_BODY
        and _first_header(scope, b"transfer-encoding") is None
    )


def lane_protocol(limits: ServerLimits, app: Any) -> type[AnnounceLaneProtocol]:
    """Return the HTTP protocol class for uvicorn that keeps ``limits`` and answers the
    announces of ``app`` (the tracker's FastAPI app) below ASGI."""
    return type(
        "AnnounceLaneProtocol",
        (AnnounceLaneProtocol,),
        {"limits": limits, "app_ref": app, "counts": LaneCounts()},
    )
