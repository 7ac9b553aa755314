"""The ``/v1`` API: thin handlers that validate, call the repository and answer with a model.

Every body in and out is a model from :mod:`p2pshare.core.messages`. Answers are serialized
once with pydantic (``model_dump_json``) instead of being validated again on the way out; the
``response_model`` of each route still documents them in ``/openapi.json``.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import AwareDatetime, BaseModel, TypeAdapter, ValidationError
from starlette.responses import Response
from starlette.types import Scope

from p2pshare import __version__
from p2pshare.core.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from p2pshare.core.ids import validate_id
from p2pshare.core.messages import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    AnnounceAck,
    AuditReport,
    DownloadReport,
    DrainStatus,
    FileDetail,
    FileRegistration,
    FileSummary,
    Health,
    LeecherUpdate,
    NewHolders,
    NodeAnnounce,
    NodeId,
    NodeInfo,
    Page,
    Problem,
    Receipt,
    ReclaimReport,
    RegistrationAck,
    RepairReport,
    ReplicaReport,
    Stats,
    build_messages,
)
from p2pshare.security.signing import BAD_SIGNATURE, HEADER, Unchecked, body_sha256, unchecked
from p2pshare.tracker.problems import PROBLEM_JSON
from p2pshare.tracker.state import TrackerState

MAX_OFFSET = 10**9
"""Largest ``offset`` a list accepts."""

_PROBLEMS: dict[int | str, dict[str, object]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": text}
    for status, text in [
        (400, "invalid input (problem+json)"),
        (401, "a signed request whose signature is missing, bad, stale or replayed"),
        (403, "the signer may not do this: it speaks for another node or file owner"),
        (404, "not found (problem+json)"),
        (413, "request body too large (problem+json)"),
        (422, "validation failed (problem+json), naming each field"),
    ]
}

build_messages()  # before the routes read them (see core.messages.Message)
router = APIRouter(prefix="/v1", responses=_PROBLEMS)
_node_id = TypeAdapter(NodeId)


# Dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread,
# which costs two thread hops per request.
async def _state(request: Request) -> TrackerState:
    return request.app.state.tracker  # type: ignore[no-any-return]


State = Annotated[TrackerState, Depends(_state)]
Limit = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"page size, 1 to {MAX_PAGE_SIZE}")
]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]


FileIdParam = Annotated[str, PathParam(description="the file id: 64 lowercase hex characters")]


async def _file_id(file_id: FileIdParam) -> str:
    return validate_id(file_id, "file id")


FileId = Annotated[str, Depends(_file_id)]


async def _signer(request: Request, t: State) -> str:
    """Return the node id that signed ``request``; raise :class:`Unauthenticated` unless its
    signature header is valid, fresh and not seen before (design.md §6)."""
    body = await request.body()  # cached by Starlette: the body model reads the same bytes
    return await signer_of(t, request.scope, request.headers.get(HEADER), body)


async def signer_of(t: TrackerState, scope: Scope, header: str | None, body: bytes) -> str:
    """Return the node id that signed the request of ``scope`` with signature ``header`` and
    ``body``; raise :class:`Unauthenticated` unless the signature is valid, fresh and not seen
    before (then it is remembered: the same signed request is accepted once). The signature
    is checked by the tracker's signature checks (:mod:`.signatures`: its checker process)."""
    pending = unchecked_signature(scope, header, body)
    return accepted_signer(t, pending, await t.signatures.matches(pending))


def unchecked_signature(scope: Scope, header: str | None, body: bytes) -> Unchecked:
    """Return the signature header of the request of ``scope`` (with ``body``) and what it
    must sign; raise :class:`Unauthenticated` when it is missing, malformed, of another
    node's key or not fresh (:func:`~p2pshare.security.signing.unchecked`)."""
    path = scope.get("raw_path") or scope["path"].encode()
    target = path.split(b"?", 1)[0].decode("latin-1")
    query = scope.get("query_string", b"")
    if query:
        target += "?" + query.decode("latin-1")
    return unchecked(header, scope["method"], target, body_sha256(body), now=time.time())


def accepted_signer(t: TrackerState, pending: Unchecked, matches: bool) -> str:
    """Return the node id of ``pending``, whose signature ``matches`` or not; raise
    :class:`Unauthenticated` when it does not or when the request was seen before (else the
    replay guard remembers it)."""
    if not matches:
        raise Unauthenticated(BAD_SIGNATURE)
    t.replays.check(pending.header, now=time.time())
    return pending.header.node_id


Signer = Annotated[str, Depends(_signer)]
"""The node id proven by the request's signature."""


def _acting_as(signer: str, claimed: str, what: str = "node_id") -> None:
    """Raise :class:`Forbidden` unless the request speaks for the node that signed it."""
    if claimed != signer:
        raise Forbidden(f"{what} {claimed} is not the signer {signer}: a node speaks for itself")


def answer(model: BaseModel, status_code: int = 200) -> Response:
    """Return ``model`` as a JSON response, serialized once."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


# --- nodes ----------------------------------------------------------------------------------


@router.post("/nodes/announce", response_model=AnnounceAck, tags=["nodes"])
async def announce(body: NodeAnnounce, t: State, signer: Signer) -> Response:
    """A node says it is online; the answer says when to announce next.

    Liveness is kept in memory and written behind; only a new or changed node (name,
    address, offered bytes) is written before the answer. Signed by the node itself.
    """
    # Most announces are answered by ``tracker/fastlane.py`` with the same steps; this route
    # answers the rest (another content type, a body that is not a JSON object).
    return Response(await record_announce(t, body, signer), media_type="application/json")


def record_known_announce(t: TrackerState, body: NodeAnnounce, signer: str) -> bytes | None:
    """Record the announce ``body`` signed by ``signer`` and return the JSON answer, when its
    node's row is current (the steady state: nothing is written before answering); return None,
    recording nothing, when the row must be written first (then :func:`record_announce`).

    Raises :class:`Forbidden` when the announce speaks for another node.
    """
    _acting_as(signer, body.node_id)
    if t.liveness.needs_row_write(body):
        return None
    return _recorded(t, body)


async def record_announce(t: TrackerState, body: NodeAnnounce, signer: str) -> bytes:
    """Record the announce ``body`` signed by ``signer``; return the JSON answer.

    Raises :class:`Forbidden` when the announce speaks for another node.
    """
    known = record_known_announce(t, body, signer)
    if known is not None:
        return known
    await t.repo.save_node(body)
    t.liveness.row_written(body)
    return _recorded(t, body)


def _recorded(t: TrackerState, body: NodeAnnounce) -> bytes:
    """Record ``body`` in the liveness map; return the answer with the node's tasks."""
    t.liveness.record(body)
    repairs = t.repairs.take(body.node_id)
    audits = t.audits.take(body.node_id)
    reclaim = t.repairs.take_reclaims(body.node_id)
    if not repairs and not audits and not reclaim:
        return t.announce_ack
    ack = AnnounceAck(
        heartbeat_interval=t.settings.heartbeat_interval,
        offline_after=t.liveness.offline_after,
        repairs=repairs,
        audits=audits,
        reclaim=reclaim,
    )
    return ack.model_dump_json().encode()


@router.post("/nodes/{node_id}/lost", response_model=Receipt, tags=["nodes"])
async def report_lost(node_id: str, body: ReclaimReport, t: State, signer: Signer) -> Response:
    """A node lost chunks (its integrity scan found them corrupt): they are repaired."""
    _acting_as(signer, body.node_id)
    if _valid_node_id(node_id) != body.node_id:
        raise InvalidInput(f"the path names node {node_id}, the body {body.node_id}")
    return answer(await t.repairs.lost(body))


@router.post("/reclaims", response_model=Receipt, tags=["nodes"])
async def report_reclaim(body: ReclaimReport, t: State, signer: Signer) -> Response:
    """A node confirms it deleted chunks the tracker said no file needs any more."""
    _acting_as(signer, body.node_id)
    return answer(await t.repairs.reclaimed(body))


@router.post("/audits", response_model=Receipt, tags=["nodes"])
async def report_audit(body: AuditReport, t: State, signer: Signer) -> Response:
    """A challenger reports an audit it got with an announce answer.

    ``failed`` and ``unanswered`` mark the target's copy bad (no longer listed or counted; the
    repair desk copies the chunk elsewhere); ``challenger-bad`` marks the challenger's own.
    """
    _acting_as(signer, body.node_id)
    return answer(await t.audits.report(body))


@router.post("/repairs", response_model=Receipt, tags=["nodes"])
async def report_repair(body: RepairReport, t: State, signer: Signer) -> Response:
    """A node reports how a repair task it got with an announce answer ended.

    ``ok`` records the target as a holder of the chunk (the target acked it to the source).
    """
    _acting_as(signer, body.node_id)
    return answer(await t.repairs.report(body))


@router.post("/nodes/{node_id}/drain", response_model=DrainStatus, tags=["nodes"])
async def start_drain(node_id: str, t: State, signer: Signer) -> Response:
    """A node is leaving: copy its chunks elsewhere; answers how many still wait."""
    _acting_as(signer, _valid_node_id(node_id))
    return answer(await t.repairs.drain(_valid_node_id(node_id)))


@router.post("/nodes/{node_id}/offline", response_model=Receipt, tags=["nodes"])
async def went_offline(node_id: str, t: State, signer: Signer) -> Response:
    """A node is stopping: it is offline from now on (until it announces again), so no
    downloader is sent to it for the three heartbeats its silence would take to notice."""
    _acting_as(signer, _valid_node_id(node_id))
    if not t.repo.liveness.stopped(node_id):
        raise NotFound(f"node {node_id} has not announced since the tracker started")
    return answer(Receipt(recorded="node-offline", at=t.clock.now()))


@router.get("/nodes/{node_id}/drain", response_model=DrainStatus, tags=["nodes"])
async def drain_status(node_id: str, t: State) -> Response:
    """How many of a node's chunks still need a copy without it."""
    return answer(await t.repairs.drain_status(_valid_node_id(node_id)))


@router.get("/nodes", response_model=Page[NodeInfo], tags=["nodes"])
async def list_nodes(
    t: State,
    online: Annotated[
        bool | None, Query(description="true: online nodes only; false: offline only")
    ] = None,
    min_free: Annotated[int, Query(ge=0, le=2**62, description="least free bytes")] = 0,
    limit: Limit = DEFAULT_PAGE_SIZE,
    offset: Offset = 0,
) -> Response:
    """Nodes, most free space first (upload step 2 asks for ``online=true&min_free=...``).

    Nodes that are leaving (draining) are not listed as online: they take no new chunks.
    """
    page = await t.repo.list_nodes(online=online, min_free=min_free, offset=offset, limit=limit)
    if online:
        kept = [n for n in page.items if not t.repairs.is_draining(n.node_id)]
        if len(kept) < len(page.items):
            gone = len(page.items) - len(kept)
            page = page.model_copy(update={"items": kept, "total": max(0, page.total - gone)})
    return answer(page)


# --- files ----------------------------------------------------------------------------------


@router.post(
    "/files",
    response_model=RegistrationAck,
    status_code=201,
    tags=["files"],
    responses={409: {"model": Problem, "description": "file id taken by another owner"}},
)
async def register_file(body: FileRegistration, t: State, signer: Signer) -> Response:
    """Upload step 9-10: register a file with its placement and the holders' acks.

    Committed before the answer. Repeating the same registration answers with the first ack
    (status 200 instead of 201). Signed by the owner.
    """
    _acting_as(signer, body.owner, "owner")
    ack, new = await t.repo.register_file(body)
    return answer(ack, status_code=201 if new else 200)


@router.get("/files", response_model=Page[FileSummary], tags=["files"])
async def list_files(
    t: State,
    name: Annotated[
        str | None, Query(max_length=255, description="part of the file name, any case")
    ] = None,
    include_deleted: Annotated[bool, Query(description="list withdrawn files too")] = False,
    limit: Limit = DEFAULT_PAGE_SIZE,
    offset: Offset = 0,
) -> Response:
    """Registered files, newest first."""
    page = await t.repo.list_files(
        name=name, include_deleted=include_deleted, offset=offset, limit=limit
    )
    return answer(page)


@router.get("/files/{file_id}", response_model=FileDetail, tags=["files"])
async def file_detail(file_id: FileIdParam, request: Request) -> Response:
    """Download steps 1-3: the manifest, seeders, leechers and the holders of every chunk."""
    # the busiest read: no dependencies to solve (same checks as ``FileId`` and ``State``)
    t: TrackerState = request.app.state.tracker
    return answer(await t.repo.file_detail(validate_id(file_id, "file id")))


@router.get("/files/{file_id}/holders", response_model=NewHolders, tags=["files"])
async def new_holders(
    file_id: FileIdParam,
    since: Annotated[
        AwareDatetime,
        Query(description="an as_of of this file's detail or of an answer here (ISO 8601)"),
    ],
    request: Request,
) -> Response:
    """The holders of the file's chunks listed since ``since``: a download's look for new
    sources every few seconds, without the whole detail (which grows with the file)."""
    t: TrackerState = request.app.state.tracker
    return answer(await t.repo.holders_since(validate_id(file_id, "file id"), since))


@router.post("/files/{file_id}/leechers", response_model=Receipt, tags=["files"])
async def update_leecher(
    file_id: FileId, body: LeecherUpdate, t: State, signer: Signer
) -> Response:
    """A node starts or stops downloading the file."""
    _acting_as(signer, body.node_id)
    return answer(await t.repo.update_leecher(file_id, body))


@router.post("/files/{file_id}/replicas", response_model=Receipt, tags=["files"])
async def report_replicas(
    file_id: FileId, body: ReplicaReport, t: State, signer: Signer
) -> Response:
    """A node reports chunks of the file it now holds or lost, and other holders' bad copies.

    Lost and bad chunks are looked at by the repair desk in its next round.
    """
    _acting_as(signer, body.node_id)
    receipt = await t.repo.report_replicas(file_id, body)
    t.repairs.shun(body.node_id, body.lost)
    t.repairs.mark({*body.lost, *(b.chunk_id for b in body.bad)})
    return answer(receipt)


@router.post("/files/{file_id}/downloads", response_model=Receipt, tags=["files"])
async def report_download(
    file_id: FileId, body: DownloadReport, t: State, signer: Signer
) -> Response:
    """Download steps 7-8: a holder reports bytes served, a leecher reports completion."""
    _acting_as(signer, body.node_id)
    return answer(await t.repo.report_download(file_id, body))


@router.delete(
    "/files/{file_id}",
    response_model=Receipt,
    tags=["files"],
    responses={403: {"model": Problem, "description": "not the file's owner"}},
)
async def delete_file(
    file_id: FileId,
    t: State,
    signer: Signer,
    node_id: Annotated[str, Query(max_length=64, description="the owner's node id")],
) -> Response:
    """The owner withdraws the file (idempotent); signed by the owner."""
    _acting_as(signer, _valid_node_id(node_id))
    return answer(await t.repo.delete_file(file_id, signer))


def _valid_node_id(node_id: str) -> str:
    """Return ``node_id`` if well-formed; raise :class:`InvalidInput` naming the field."""
    try:
        return _node_id.validate_python(node_id)
    except ValidationError as exc:
        msg = exc.errors(include_url=False)[0]["msg"]
        raise InvalidInput(f"node_id: {msg}") from None


# --- the service ----------------------------------------------------------------------------


@router.get("/health", response_model=Health, tags=["service"])
async def health() -> Response:
    """Answers while the tracker runs."""
    return answer(Health(status="ok", version=__version__))


@router.get("/stats", response_model=Stats, tags=["service"])
async def stats(t: State) -> Response:
    """Nodes online, capacity, files, chunks, under-replicated chunks."""
    return answer(await t.repo.stats())
