"""What every transfer needs from its node, handed over as one immutable value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from p2pshare.core.scheduler import FETCH_BUDGET
from p2pshare.node.identity import NodeIdentity
from p2pshare.node.peer_client import PeerClient
from p2pshare.node.tracker_client import TrackerClient
from p2pshare.storage.filestore import FileChunkStore


@dataclass(frozen=True)
class NodeContext:
    """The node's store, identity and clients, and the transfer limits."""

    store: FileChunkStore
    identity: NodeIdentity
    tracker: TrackerClient
    peers: PeerClient
    data_dir: Path
    chunk_size: int
    per_holder: int = 4
    """concurrent requests per holder"""
    total: int = 8
    """concurrent requests in all; a download makes fewer when ``total`` of its chunks are
    more than ``fetch_budget`` bytes (``core.scheduler.fetch_limits``)"""
    fetch_budget: int = FETCH_BUDGET
    """bytes of chunks a download holds at once, up to ``total`` chunks (at least 2)"""
    reservation_ttl: float = 1800.0
    encrypt: bool = False
    """encrypt uploads unless the request says otherwise"""
