"""Who this node is: its id (made once, kept in the data dir), name and public address."""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ID_FILE = "node-id"


@dataclass(frozen=True)
class NodeIdentity:
    """This node's id (what the network trusts), its name (a label) and peer API address."""

    node_id: str
    name: str
    address: str


def new_node_id() -> str:
    """Return a fresh random node id: ``n`` and 26 base32 characters (130 random bits)."""
    return "n" + base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=").lower()[:26]


def load_or_create_node_id(data_dir: Path) -> str:
    """Return the node id kept in ``data_dir``, making and saving one on first start (blocking).

    The file is written atomically (temp file, fsync, rename), so a crash never leaves a
    half-written id.
    """
    path = data_dir / ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    node_id = new_node_id()
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{ID_FILE}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        fh.write(node_id + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return node_id
