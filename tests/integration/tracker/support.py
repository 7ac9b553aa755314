"""Helpers for the tracker tests: nodes, manifests and registrations built from plain values."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from p2pshare.core.manifest import Manifest, manifest_of_bytes
from p2pshare.core.messages import (
    ChunkAck,
    FileRegistration,
    NodeAnnounce,
    Placement,
)

KiB = 1024
CHUNK = 64 * KiB
CREATED = datetime(2030, 1, 1, tzinfo=UTC)


def node(
    node_id: str, *, free: int = 10**9, offered: int = 2 * 10**9, used: int = 0
) -> NodeAnnounce:
    """Return an announce of ``node_id`` on a made-up loopback address."""
    port = 7100 + sum(node_id.encode()) % 800
    return NodeAnnounce(
        node_id=node_id,
        name=f"node {node_id}",
        address=f"http://127.0.0.1:{port}",
        offered_bytes=offered,
        used_bytes=used,
        free_bytes=free,
    )


def data_of(n_chunks: int, seed: int = 1, tail: int = 1000) -> bytes:
    """Return random bytes that cut into ``n_chunks`` chunks (the last one ``tail`` bytes)."""
    rng = random.Random(seed)
    return rng.randbytes((n_chunks - 1) * CHUNK + tail)


def manifest(n_chunks: int = 3, *, seed: int = 1, name: str = "file.bin") -> Manifest:
    """Return a valid manifest of ``n_chunks`` chunks of 64 KiB."""
    return manifest_of_bytes(data_of(n_chunks, seed), name, CREATED, CHUNK)


def chunk_sizes(m: Manifest) -> dict[str, int]:
    """Return each chunk id's size in bytes."""
    sizes = {}
    for i, cid in enumerate(m.chunk_ids):
        sizes[cid] = m.chunk_size if i < len(m.chunk_ids) - 1 else m.size - i * m.chunk_size
    return sizes


def registration(
    m: Manifest,
    owner: str,
    holders: Iterable[str] | Mapping[str, Iterable[str]],
    *,
    replica_target: int = 1,
) -> FileRegistration:
    """Return a registration of ``m``: each chunk on ``holders`` (or per chunk id), all acked."""
    sizes = chunk_sizes(m)
    per_chunk: dict[str, list[str]]
    if isinstance(holders, Mapping):
        per_chunk = {cid: list(holders[cid]) for cid in holders}
    else:
        hs = list(holders)
        per_chunk = {cid: hs for cid in dict.fromkeys(m.chunk_ids)}
    return FileRegistration(
        manifest=m,
        owner=owner,
        replica_target=replica_target,
        placement=[Placement(chunk_id=c, holders=h) for c, h in per_chunk.items()],
        acks=[
            ChunkAck(node_id=n, chunk_id=c, size=sizes[c]) for c, h in per_chunk.items() for n in h
        ],
    )


def body(model: Any) -> dict[str, Any]:
    """Return a model as the JSON-ready dict a client sends."""
    return model.model_dump(mode="json")


async def announce(client: httpx.AsyncClient, *nodes: NodeAnnounce) -> None:
    """Announce each node; fail on any error."""
    for a in nodes:
        r = await client.post("/v1/nodes/announce", json=body(a))
        assert r.status_code == 200, r.text


def assert_problem(r: httpx.Response, status: int, code: str, *needles: str) -> dict[str, Any]:
    """Assert ``r`` is a problem+json of ``status`` and type ``urn:p2pshare:<code>``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc = r.json()
    assert doc["type"] == f"urn:p2pshare:{code}", doc
    assert doc["status"] == status
    assert doc["title"]
    for needle in needles:
        assert needle in doc["detail"] or needle in str(doc.get("errors")), doc
    return doc
