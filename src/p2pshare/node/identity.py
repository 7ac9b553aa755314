"""Who this node is: its id (the hash of its key, :mod:`p2pshare.security.keys`), its name
(a label) and its public peer API address (with the certificate pin when TLS is on)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeIdentity:
    """This node's id (what the network trusts), its name (a label) and peer API address."""

    node_id: str
    name: str
    address: str
