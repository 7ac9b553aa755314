"""Wire messages of a node's APIs: the peer API (other nodes) and the control API (the CLI).

The tracker's messages are in :mod:`p2pshare.core.messages`; shared field types come from there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from p2pshare.core.chunking import MAX_CHUNK_SIZE
from p2pshare.core.manifest import Manifest
from p2pshare.core.messages import (
    MAX_REPLICAS,
    MAX_REPORT_CHUNKS,
    Address,
    ByteCount,
    HexId,
    Message,
    NodeId,
    NodeName,
)

MAX_RESERVATION_TTL = 24 * 3600.0

# --- peer API ------------------------------------------------------------------------------


class ReservationRequest(Message):
    """Upload step 6: ask a holder to promise ``nbytes`` for one upload."""

    requester: NodeId = Field(description="the uploading node")
    upload_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    nbytes: int = Field(gt=0, le=2**62)
    ttl: float = Field(gt=0, le=MAX_RESERVATION_TTL, description="seconds the promise holds")


class ReservationGrant(Message):
    """A holder's promise: pushes under ``reservation_id`` may use ``nbytes`` until expiry."""

    reservation_id: str
    holder: NodeId
    nbytes: int
    expires_at: datetime


class ChunkReceipt(Message):
    """Upload step 8: the holder verified the chunk's hash and made it durable."""

    holder: NodeId
    chunk_id: HexId
    size: int = Field(ge=0, le=MAX_CHUNK_SIZE)
    created: bool = Field(description="False when the holder already had the chunk")


class DownloadAck(Message):
    """Download step 6: a downloader's receipt to a holder for what it received."""

    downloader: NodeId
    file_id: HexId
    chunks: int = Field(ge=0, le=MAX_REPORT_CHUNKS)
    bytes: ByteCount


class AckReceipt(Message):
    """A holder's answer to a :class:`DownloadAck`."""

    holder: NodeId
    recorded: bool


# --- control API (loopback only) -----------------------------------------------------------


class UploadRequest(Message):
    """Start an upload of a file on the node's own disk."""

    path: str = Field(min_length=1, max_length=4096, description="absolute path of the file")
    name: str | None = Field(default=None, description="name to register (default: file name)")
    replicas: int = Field(default=2, ge=1, le=MAX_REPLICAS)
    allocation: dict[NodeId, ByteCount] | None = Field(
        default=None, description="bytes to use on each chosen holder; None = spread by free space"
    )
    chunk_size: int | None = Field(default=None, description="None = the node's setting")
    encrypt: bool | None = Field(
        default=None,
        description="encrypt each chunk before it leaves this node (None = the node's setting)",
    )


class DownloadRequest(Message):
    """Start a download of a file to a path on the node's own disk."""

    file_id: HexId
    path: str = Field(min_length=1, max_length=4096, description="absolute output path")
    force: bool = Field(default=False, description="overwrite an existing file")
    key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{43}$",
        description="the file key of an encrypted file (the part of its share link after '#')",
    )
    check_sha256: bool = Field(
        default=False,
        description="also hash the whole assembled file and compare it with the manifest's "
        "SHA-256 (one more pass over the file; every chunk is verified against the file id "
        "either way, and an encrypted file's plaintext SHA-256 is always checked)",
    )


TransferKind = Literal["upload", "download"]
TransferState = Literal[
    "planned",
    "hashing",
    "reserving",
    "pushing",
    "registering",
    "fetching",
    "verifying",
    "completed",
    "failed",
    "cancelled",
]


class HolderShare(Message):
    """Where an upload put its chunks, or where a download got them: one line per node."""

    node_id: NodeId
    name: NodeName
    address: Address
    chunks: int
    bytes: int


class TransferResult(Message):
    """What a finished transfer produced (the CLI's ``--json`` document)."""

    file_id: HexId
    name: str
    size: int
    chunks: int
    sha256: HexId
    sha256_checked: bool = Field(
        default=False,
        description="sha256 was computed here from the file's bytes (an upload, a download "
        "with check_sha256, an encrypted download's plaintext), not only read from the manifest",
    )
    path: str
    seconds: float
    holders: list[HolderShare] = Field(
        default_factory=list,
        description="upload: where the chunks went; download: which nodes served them",
    )
    replicas: int | None = None
    encrypted: bool = False
    share_link: str | None = Field(
        default=None,
        description="p2pshare://FILE_ID, with #KEY for an encrypted file: hand it to whoever "
        "may read the file (the key never goes to the tracker or the holders)",
    )


def transfer_result(
    manifest: Manifest,
    path: str,
    seconds: float,
    holders: list[HolderShare],
    replicas: int | None = None,
    *,
    sha256_checked: bool,
) -> TransferResult:
    """Return the result of a transfer of the file ``manifest`` describes."""
    return TransferResult(
        file_id=manifest.file_id,
        name=manifest.name,
        size=manifest.size,
        chunks=len(manifest.chunk_ids),
        sha256=manifest.sha256,
        sha256_checked=sha256_checked,
        path=path,
        seconds=round(seconds, 3),
        holders=holders,
        replicas=replicas,
    )


class TransferEvent(Message):
    """One line of a transfer's progress stream (JSON lines)."""

    transfer_id: str
    kind: TransferKind
    state: TransferState
    done_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)
    message: str = ""
    error: str | None = Field(default=None, description="one-line reason, when failed")
    error_code: str | None = None
    result: TransferResult | None = None


class NodeStatus(Message):
    """``GET /v1/control/status``: this node as it sees itself."""

    node_id: NodeId
    name: NodeName
    address: Address
    tracker_url: str
    offered_bytes: ByteCount
    used_bytes: ByteCount
    reserved_bytes: ByteCount
    free_bytes: ByteCount
    chunks: int


class TransferInfo(Message):
    """A transfer as listed by ``GET /v1/control/transfers``."""

    transfer_id: str
    kind: TransferKind
    state: TransferState
    file_id: HexId | None
    name: str
    done_bytes: int
    total_bytes: int
    started_at: datetime


class Challenge(Message):
    """An audit: prove you hold ``chunk_id`` by answering HMAC-SHA256(key=nonce, its bytes)."""

    chunk_id: HexId
    nonce: HexId


class ChallengeAnswer(Message):
    """The answer to a :class:`Challenge`."""

    holder: NodeId
    chunk_id: HexId
    mac: HexId
