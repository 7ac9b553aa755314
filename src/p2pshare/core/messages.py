"""Wire messages: every request and response body of the tracker and node APIs.

Server and client import these same models, so no body is ever a dict built by hand. Field
limits are part of the protocol: a message that breaks one is refused before anything runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from p2pshare.core.chunking import MAX_CHUNKS
from p2pshare.core.errors import InvalidId
from p2pshare.core.ids import NODE_ID_LENGTH, validate_id, validate_node_id
from p2pshare.core.manifest import Manifest

MAX_PAGE_SIZE = 500
"""Most items one list request may return."""
DEFAULT_PAGE_SIZE = 100
MAX_REPLICAS = 16
"""Highest replica target one file may ask for."""
MAX_REPORT_CHUNKS = 4096
"""Most chunk ids one replica report may carry."""


def _hex_id(value: str) -> str:
    try:
        return validate_id(value)
    except InvalidId as exc:
        raise ValueError(exc.detail) from None


HexId = Annotated[str, AfterValidator(_hex_id)]
"""A chunk id or file id: 64 lowercase hex characters."""


def _node_id(value: str) -> str:
    try:
        return validate_node_id(value)
    except InvalidId as exc:
        raise ValueError(exc.detail) from None


NodeId = Annotated[
    str,
    Field(
        min_length=NODE_ID_LENGTH,
        max_length=NODE_ID_LENGTH,
        pattern=r"^n[a-z2-7]+$",
        description="a node's id: the hash of its public key ('n' and 34 base32 characters)",
    ),
    AfterValidator(_node_id),
]
NodeName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="a human label for a node; ids, not names, are trusted",
    ),
]


def _address(value: str) -> str:
    scheme = value.split("://", 1)[0]
    pinned = "#" in value
    if scheme == "https" and not pinned:
        raise ValueError("an https address carries its certificate fingerprint after '#'")
    if scheme == "http" and pinned:
        raise ValueError("only an https address carries a certificate fingerprint")
    return value


Address = Annotated[
    str,
    Field(
        min_length=8,
        max_length=255,
        pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?(#[0-9a-f]{64})?$",
        description=(
            "base URL where a node serves its peer API: http://127.0.0.1:7071, or "
            "https://HOST:PORT#FINGERPRINT with the SHA-256 (hex) of the node's certificate"
        ),
    ),
    AfterValidator(_address),
]
ByteCount = Annotated[int, Field(ge=0, le=2**62, description="a number of bytes")]


class Message(BaseModel):
    """Base of every wire message: unknown fields are refused, instances are immutable.

    A message's validator is built when first used, not when its class is defined: a CLI
    command uses a few of them and starts about 10% sooner (``p2pshare --version``, 16 pairs).
    The tracker and the node build them all as they start (:func:`build_messages`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def build_messages() -> None:
    """Build the validator of every message class defined so far, now.

    Servers call this as they start, so no request waits for a build, and so FastAPI meets
    built models when it reads the routes (it warns about its body parameters otherwise).
    """
    pending: list[type[Message]] = [Message]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__pydantic_complete__:
            cls.model_rebuild()
        # what is built from the class later (FastAPI's adapters of its routes) is built at
        # once too, not at its first request
        cls.model_config["defer_build"] = False


# --- nodes ---------------------------------------------------------------------------------


class NodeAnnounce(Message):
    """A node says it is online (sent every heartbeat interval)."""

    node_id: NodeId
    name: NodeName
    address: Address
    offered_bytes: ByteCount = Field(description="storage the node offers to others")
    used_bytes: ByteCount = Field(description="bytes of chunks it stores now")
    free_bytes: ByteCount = Field(
        description="bytes it can still accept (offered - used - reserved)"
    )


MAX_REPAIRS_PER_ANNOUNCE = 16
"""Most repair tasks one announce answer hands a node."""
MAX_RECLAIMS_PER_ANNOUNCE = 256
"""Most chunks one announce answer tells a node to delete."""


class RepairTask(Message):
    """Copy a chunk this node holds to ``target`` (under a reservation there), then report.

    The tracker hands these out with announce answers when a chunk has fewer live replicas
    than its file's target (design.md §5, repair).
    """

    task_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")
    chunk_id: HexId
    size: ByteCount
    target_id: NodeId
    target_address: Address


class AuditTask(Message):
    """Challenge ``target`` to prove it holds a chunk this node holds too (design.md §5).

    The challenger sends ``nonce`` to the target, which answers HMAC-SHA256(key=nonce, chunk
    bytes); the challenger computes the same from its own copy and reports the outcome.
    """

    task_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")
    chunk_id: HexId
    target_id: NodeId
    target_address: Address
    nonce: HexId


AuditOutcome = Literal["passed", "failed", "unanswered", "challenger-bad"]


class AuditReport(Message):
    """How an audit ended: ``passed``, ``failed`` (wrong answer or chunk missing),
    ``unanswered`` (target unreachable), or ``challenger-bad`` (the challenger's own copy no
    longer matches its id; the target was not judged)."""

    node_id: NodeId = Field(description="the challenger")
    task_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")
    outcome: AuditOutcome
    detail: str = Field(default="", max_length=500)


class ReclaimReport(Message):
    """A node reports chunks it no longer has: deleted because the tracker said no file needs
    them (``POST /v1/reclaims``), or lost, e.g. quarantined by its integrity scan
    (``POST /v1/nodes/{id}/lost``)."""

    node_id: NodeId
    chunk_ids: list[HexId] = Field(min_length=1, max_length=MAX_RECLAIMS_PER_ANNOUNCE)


class AnnounceAck(Message):
    """The tracker's answer to an announce."""

    heartbeat_interval: float = Field(gt=0, description="seconds until the next announce is due")
    offline_after: float = Field(
        gt=0, description="seconds of silence after which a node is offline"
    )
    repairs: list[RepairTask] = Field(
        default_factory=list,
        max_length=MAX_REPAIRS_PER_ANNOUNCE,
        description="chunks this node should copy to other nodes",
    )
    audits: list[AuditTask] = Field(
        default_factory=list,
        max_length=MAX_REPAIRS_PER_ANNOUNCE,
        description="holders this node should challenge",
    )
    reclaim: list[HexId] = Field(
        default_factory=list,
        max_length=MAX_RECLAIMS_PER_ANNOUNCE,
        description="chunks this node holds that no file needs any more: delete them",
    )


class DrainStatus(Message):
    """A node leaving gracefully: how many of its chunks still wait for a copy elsewhere."""

    node_id: NodeId
    draining: bool
    chunks_held: int = Field(ge=0, description="chunks the tracker lists on this node")
    chunks_waiting: int = Field(
        ge=0, description="of those, chunks below their target without this node's copy"
    )


class RepairReport(Message):
    """A node reports how a repair task it was given ended."""

    node_id: NodeId = Field(description="the node that was given the task (the source)")
    task_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")
    ok: bool = Field(description="true: the target acked the chunk")
    detail: str = Field(default="", max_length=500, description="why it failed, when it did")


class NodeInfo(Message):
    """A node as the tracker knows it."""

    node_id: NodeId
    name: NodeName
    address: Address
    offered_bytes: ByteCount
    used_bytes: ByteCount
    free_bytes: ByteCount
    last_seen: datetime
    online: bool


T = TypeVar("T")


class Page(Message, Generic[T]):
    """One page of a list: ``items`` from ``offset``, ``total`` matching in all."""

    items: list[T]
    total: int = Field(ge=0)
    offset: int = Field(ge=0)
    limit: int = Field(ge=1, le=MAX_PAGE_SIZE)


# --- files ---------------------------------------------------------------------------------


class ChunkAck(Message):
    """A holder's receipt: it verified ``chunk_id`` and made it durable."""

    node_id: NodeId
    chunk_id: HexId
    size: ByteCount


class Placement(Message):
    """Which nodes hold one chunk."""

    chunk_id: HexId
    holders: list[NodeId] = Field(min_length=1, max_length=MAX_REPLICAS + 1)


class FileRegistration(Message):
    """Upload step 9: the manifest, where every chunk went, and the holders' acks."""

    manifest: Manifest
    owner: NodeId = Field(description="the uploading node")
    replica_target: int = Field(
        ge=1, le=MAX_REPLICAS, description="holders per chunk the owner asked for"
    )
    placement: list[Placement] = Field(max_length=MAX_CHUNKS)
    acks: list[ChunkAck] = Field(max_length=MAX_CHUNKS * (MAX_REPLICAS + 1))

    @model_validator(mode="after")
    def _placement_covers_each_chunk_once(self) -> FileRegistration:
        placed = [p.chunk_id for p in self.placement]
        if len(set(placed)) != len(placed):
            raise ValueError("placement lists a chunk more than once")
        missing = set(self.manifest.chunk_ids) - set(placed)
        if missing:
            raise ValueError(f"no holder for chunk {sorted(missing)[0]}")
        extra = set(placed) - set(self.manifest.chunk_ids)
        if extra:
            raise ValueError(f"placement names chunk {sorted(extra)[0]}, which is not in the file")
        acked = {(a.node_id, a.chunk_id) for a in self.acks}
        for p in self.placement:
            for node in p.holders:
                if (node, p.chunk_id) not in acked:
                    raise ValueError(f"holder {node} has no ack for chunk {p.chunk_id}")
        return self


FileState = Literal["available", "deleted"]


class RegistrationAck(Message):
    """The tracker's ack of a registration (upload step 10): the file is committed."""

    file_id: HexId
    state: FileState
    registered_at: datetime


class FileSummary(Message):
    """A file in a list."""

    file_id: HexId
    name: str
    size: ByteCount
    chunks: int = Field(ge=0)
    owner: NodeId
    state: FileState
    created: datetime
    downloads: int = Field(ge=0, description="completed downloads recorded")


class Holder(Message):
    """A node holding a chunk, as a downloader needs it."""

    node_id: NodeId
    address: Address
    online: bool
    name: NodeName | None = Field(default=None, description="the node's label")


class ChunkHolders(Message):
    """Where one chunk of a file lives; online holders first.

    At most :data:`LISTED_HOLDERS` are listed (BitTorrent's *numwant*: a popular file's detail
    stays bounded; with more online holders than that, a random sample of them for each
    request, which spreads the load); ``holders_total`` counts them all."""

    index: int = Field(ge=0)
    chunk_id: HexId
    holders: list[Holder]
    replicas_online: int = Field(ge=0)
    holders_total: int = Field(ge=0, description="holders of the chunk, listed or not")


LISTED_HOLDERS = 16
"""the most holders a file detail lists for one chunk"""


class FileDetail(Message):
    """Download steps 1-3: the manifest and where each chunk is."""

    manifest: Manifest
    owner: NodeId
    state: FileState
    replica_target: int
    registered_at: datetime
    seeders: list[NodeInfo] = Field(description="nodes holding every chunk")
    leechers: list[NodeInfo] = Field(description="nodes downloading now")
    chunks: list[ChunkHolders]
    holders_online: int = Field(
        ge=0, description="distinct online holders of any of its chunks, listed or not"
    )
    downloads: int = Field(ge=0)
    last_audit: datetime | None = Field(
        default=None, description="when a replica of one of its chunks was last audited"
    )
    as_of: datetime | None = Field(
        default=None,
        description="ask GET /v1/files/{file_id}/holders?since=as_of for the holders listed "
        "after this detail (a download's look for new sources, without the whole detail)",
    )


NEW_HOLDERS_LIMIT = 4096
"""Most holders listed in one :class:`NewHolders` answer."""


class NewHolder(Message):
    """A holder of one of a file's chunks (a chunk held by a new node, or a new copy)."""

    chunk_id: HexId
    holder: Holder


class NewHolders(Message):
    """The replicas of a file's chunks listed since a time: what a download asks every few
    seconds for new sources (``GET /v1/files/{file_id}/holders?since=...``), instead of the
    whole :class:`FileDetail`, which grows with the file."""

    holders: list[NewHolder] = Field(max_length=NEW_HOLDERS_LIMIT)
    as_of: datetime = Field(
        description="ask with since=as_of next time. It lies a few seconds before the answer, "
        "so a replica written while it was read is not missed: the next answer may list some "
        "holders again"
    )


class LeecherUpdate(Message):
    """A node starts or stops downloading a file."""

    node_id: NodeId
    state: Literal["started", "stopped"]


class BadReplica(Message):
    """A holder's copy of a chunk that failed verification at the reporter."""

    node_id: NodeId = Field(description="the holder that sent bytes not matching the chunk id")
    chunk_id: HexId


class ReplicaReport(Message):
    """A node reports chunks of a file it now holds or lost, and other holders' bad copies.

    A replica reported ``bad`` is no longer listed as a holder (nor counted) until its holder
    reports the chunk held again (after its own integrity scan).
    """

    node_id: NodeId
    held: list[HexId] = Field(default_factory=list, max_length=MAX_REPORT_CHUNKS)
    lost: list[HexId] = Field(default_factory=list, max_length=MAX_REPORT_CHUNKS)
    bad: list[BadReplica] = Field(default_factory=list, max_length=MAX_REPORT_CHUNKS)


class DownloadReport(Message):
    """Download steps 7-8: a leecher reports completion, or a holder reports bytes served.

    ``role`` is ``leecher`` for the downloader's completion and ``holder`` for a holder's
    report of what it served to ``peer`` (the downloader).
    """

    node_id: NodeId
    role: Literal["leecher", "holder"]
    bytes: ByteCount
    peer: NodeId | None = Field(default=None, description="for a holder: whom it served")


class Receipt(Message):
    """The tracker's ack of a report: what it recorded and when."""

    recorded: str = Field(description="what was recorded, e.g. 'download-completed'")
    at: datetime


class Health(Message):
    """``GET /v1/health``."""

    status: Literal["ok"]
    version: str


class Stats(Message):
    """``GET /v1/stats``: the network at a glance."""

    nodes_online: int = Field(ge=0)
    nodes_total: int = Field(ge=0)
    capacity_bytes: ByteCount = Field(description="storage offered by online nodes")
    free_bytes: ByteCount = Field(description="free storage on online nodes")
    files: int = Field(ge=0)
    chunks: int = Field(ge=0, description="distinct chunks of available files")
    under_replicated: int = Field(
        ge=0, description="chunks with fewer online holders than their file's replica target"
    )


class Problem(Message):
    """An error body (``application/problem+json``, RFC 9457)."""

    type: str = Field(description="stable error type, e.g. 'urn:p2pshare:not-found'")
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = Field(
        default=None, description="for validation errors: field and message of each"
    )
