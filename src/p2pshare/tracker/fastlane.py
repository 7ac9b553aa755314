"""The fast lane: the two busiest requests answered without FastAPI's machinery.

Announces (every node, every heartbeat) and file details (every download, every 2 s) are most
of the tracker's requests. Routed through FastAPI, each spends more CPU in routing, dependency
solving, body handling and the exception middleware than in its own work (the Ed25519 check
aside). :class:`FastLane`, a pure ASGI middleware inside the rate and body-size limits,
answers the common case of each itself, with the same steps as the route in the same order,
through the same functions.

``POST /v1/nodes/announce`` with a plain ``application/json`` body
(:func:`~p2pshare.tracker.routes.signer_of`, :func:`~p2pshare.tracker.routes.record_announce`):

1. the body is read and parsed as JSON (:func:`json.loads`, as Starlette does);
2. the signature is checked and the replay guard remembers it (401 otherwise);
3. the body is validated as a :class:`~p2pshare.core.messages.NodeAnnounce` (422 naming
   ``body.<field>`` otherwise, as FastAPI does);
4. the announce is recorded (403 when it speaks for another node) and answered.

``GET /v1/files/{file_id}`` with a well-formed file id: the repository's detail, or 404.

Anything else goes on to FastAPI untouched: another path or method, an announce in another
content type, a file id that is not well-formed, and, with the body the lane read handed on, an
announce whose body is empty or not a JSON object (FastAPI then answers exactly as it always
did). Errors of the error tree become the same problem+json as :mod:`p2pshare.tracker.problems`
makes; any other exception propagates to the app's 500 handler.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from p2pshare.core.errors import P2PShareError
from p2pshare.core.ids import is_valid_id
from p2pshare.core.messages import NodeAnnounce
from p2pshare.core.problems import problem_for_error, problem_for_validation
from p2pshare.tracker.problems import problem_response
from p2pshare.tracker.routes import record_announce, signer_of
from p2pshare.tracker.state import TrackerState

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
    header = _first_header(scope, _AUTHORIZATION)
    signer = signer_of(state, scope, None if header is None else header.decode("latin-1"), body)
    try:
        announce = NodeAnnounce.model_validate(data, from_attributes=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise _Invalid(errors) from None
    return await record_announce(state, announce, signer)


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
    except P2PShareError as exc:
        await problem_response(problem_for_error(exc))(scope, receive, send)
        return
    except _Invalid as exc:
        await problem_response(problem_for_validation(exc.errors))(scope, receive, send)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(content)).encode()), *_JSON_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": content})


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
