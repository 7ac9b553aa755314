"""Security between real processes (design.md §6): private files, pushes only under one's own
reservation, signed and fresh requests at holders, and certificate pins."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from p2pshare.core.errors import Unavailable
from p2pshare.core.ids import chunk_id as hash_chunk
from p2pshare.core.links import parse_link
from p2pshare.node.http import new_session
from p2pshare.node.peer_client import PeerClient
from p2pshare.node.streams import StreamPool
from p2pshare.security.signing import sign_request
from tests.integration.network.cluster import Cluster, cluster, make_file, plain, sha256
from tests.integration.tracker.support import keys, signed

pytestmark = pytest.mark.timeout(300)

MARKER = b"THE-PLAINTEXT-MARKER-d41d8cd98f00b204"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("sec"), nodes=3) as c:
        yield c


def _marked_file(path: Path, size: int) -> str:
    """Write ``size`` bytes where the marker repeats every 4 KiB; return the SHA-256."""
    block = MARKER + bytes(4096 - len(MARKER))
    data = (block * (size // len(block) + 1))[:size]
    path.write_bytes(data)
    return sha256(path)


def test_an_encrypted_file_is_unreadable_at_holders_and_opens_with_its_link(
    net: Cluster, tmp_path: Path
) -> None:
    n1, n2, n3 = (net.nodes[n] for n in ("n1", "n2", "n3"))
    src = tmp_path / "secret-report.txt"
    digest = _marked_file(src, 300 * 1024 + 17)

    up = net.upload(n1, src, "--encrypt", "--chunk-size", "64KiB", "--replicas", "2")
    assert up["encrypted"] is True
    assert (up["name"], up["size"], up["sha256"]) == (src.name, src.stat().st_size, digest)
    link = parse_link(up["share_link"])
    assert link.file_id == up["file_id"] and link.key is not None

    # the tracker sees neither the name nor the plaintext hash
    detail = net.get(f"/v1/files/{up['file_id']}")
    manifest = detail["manifest"]
    assert manifest["name"] == "encrypted" and manifest["sealed"]
    assert manifest["sha256"] != digest
    assert src.name not in json.dumps(detail)
    assert net.get("/v1/files", name="secret")["items"] == []

    # no holder's stored bytes contain the marker; each chunk file hashes to its (ciphertext) id
    found = 0
    for ch in detail["chunks"]:
        for h in ch["holders"]:
            node = next(n for n in net.nodes.values() if n.node_id == h["node_id"])
            data = node.chunk_path(ch["chunk_id"]).read_bytes()
            assert MARKER not in data
            assert hash_chunk(data) == ch["chunk_id"]
            found += 1
    assert found >= 2 * len(detail["chunks"])

    # without the key: refused, non-zero, nothing written
    out = tmp_path / "nokey" / "copy.txt"
    out.parent.mkdir()
    proc = net.cli(n3, "download", up["file_id"], "-o", str(out))
    assert proc.returncode != 0
    assert "encrypted" in proc.stderr and "share link" in proc.stderr, proc.stderr
    assert not out.exists() and list(out.parent.iterdir()) == []

    # with the wrong key: refused the same way
    wrong = f"p2pshare://{up['file_id']}#{'A' * 43}"
    proc = net.cli(n3, "download", wrong, "-o", str(out))
    assert proc.returncode != 0
    assert "wrong key" in proc.stderr, proc.stderr
    assert list(out.parent.iterdir()) == []

    # with the link: the original, under its real name when no -o is given
    down = net.download(n3, up["share_link"], out)
    assert down["sha256"] == digest and sha256(out) == digest
    assert down["encrypted"] is True and down["name"] == src.name
    assert not (out.parent / "copy.txt.part").exists()

    # uploading the same file again reuses its key: the same chunks, the same file id
    again = net.upload(n1, src, "--encrypt", "--chunk-size", "64KiB", "--replicas", "2")
    assert (again["file_id"], again["share_link"]) == (up["file_id"], up["share_link"])
    assert n2.node_id != n3.node_id


def test_a_download_checks_the_manifests_sha256_only_when_asked(tmp_path: Path) -> None:
    """Every chunk is verified against the file id; the whole-file SHA-256 in the manifest is
    the uploader's statement. A manifest whose SHA-256 lies (rewritten in the tracker's
    database here): a plain download says the SHA-256 was not re-hashed, and
    ``--check-sha256`` refuses the file, nothing under its name."""
    c = Cluster(tmp_path)
    try:
        url = c.start_tracker()
        port = int(url.partition("#")[0].rsplit(":", 1)[1])
        n1, _, n3 = (c.start_node(n, "64MiB") for n in ("n1", "n2", "n3"))
        c.wait_online(3)
        src = tmp_path / "statement.bin"
        digest = make_file(src, 5 * 64 * 1024 + 11)
        args = ["--replicas", "1", "--alloc", "n2=64MiB", "--chunk-size", "64KiB"]
        up = c.cli_json(n1, "upload", str(src), *args)
        assert (up["sha256"], up["sha256_checked"]) == (digest, True)

        c.kill("tracker")
        lie = "ab" * 32
        with sqlite3.connect(tmp_path / "tracker" / "tracker.db") as db:
            (text,) = db.execute(
                "SELECT manifest FROM files WHERE file_id = ?", (up["file_id"],)
            ).fetchone()
            manifest = json.loads(text)
            manifest["sha256"] = lie
            canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
            db.execute(
                "UPDATE files SET manifest = ? WHERE file_id = ?", (canonical, up["file_id"])
            )
        db.close()
        c.start_tracker(port=port)
        c.wait_online(3)

        out = tmp_path / "plain.bin"
        down = c.download(n3, up["file_id"], out)
        assert sha256(out) == digest  # the chunks the file id names, byte for byte
        assert (down["sha256"], down["sha256_checked"]) == (lie, False)

        checked = tmp_path / "checked.bin"
        proc = c.cli(n3, "download", up["file_id"], "-o", str(checked), "--check-sha256")
        assert proc.returncode != 0
        assert f"hashes to {digest}, not {lie}" in proc.stderr, proc.stderr
        assert not checked.exists()
    finally:
        c.close()


def _holder_url(net: Cluster, name: str, path: str) -> str:
    return plain(net.nodes[name].address, path)


def _ask_reservation(
    net: Cluster, holder: str, signer: str, requester: str | None = None
) -> httpx.Response:
    """POST a reservation signed by test node ``signer`` in ``requester``'s name (its own)."""
    who = keys(requester or signer).node_id
    body = json.dumps({"requester": who, "upload_id": "u1", "nbytes": 4096, "ttl": 60}).encode()
    return httpx.post(
        _holder_url(net, holder, "/v1/reservations"),
        content=body,
        headers={
            "Content-Type": "application/json",
            **signed("POST", "/v1/reservations", body, signer),
        },
        verify=False,
        timeout=10,
    )


def _reserve(net: Cluster, holder: str, label: str) -> str:
    r = _ask_reservation(net, holder, label)
    assert r.status_code == 201, r.text
    return str(r.json()["reservation_id"])


def _put(net: Cluster, holder: str, data: bytes, reservation: str, label: str | None) -> Any:
    cid = hash_chunk(data)
    target = f"/v1/chunks/{cid}?reservation={reservation}"
    headers = {"Content-Type": "application/octet-stream"}
    if label is not None:
        headers |= _signed_put(target, cid, label)
    return httpx.put(
        _holder_url(net, holder, target), content=data, headers=headers, verify=False, timeout=10
    )


def _signed_put(target: str, cid: str, label: str) -> dict[str, str]:
    """A push's signature covers its body by the chunk id."""
    return sign_request(keys(label), "PUT", target, cid, now=time.time())


def test_an_encrypted_upload_of_a_file_changing_while_read_is_refused(
    net: Cluster, tmp_path: Path
) -> None:
    # The key is chosen from the file's bytes in a first pass; a second pass that read other
    # bytes would encrypt them under a key (and nonces) made for the first: refused, nothing
    # registered. Another thread rewrites bytes of the file all through the upload.
    n1 = net.nodes["n1"]
    src = tmp_path / "moving.bin"
    size = 8 << 20
    src.write_bytes(random.Random(3).randbytes(size))
    stop = threading.Event()

    def churn() -> None:
        rnd, deadline = random.Random(4), time.monotonic() + 120
        fd = os.open(src, os.O_WRONLY)
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                os.pwrite(fd, rnd.randbytes(64), rnd.randrange(size - 64))
        finally:
            os.close(fd)

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        proc = net.cli(n1, "upload", str(src), "--auto", "--encrypt", "--replicas", "2")
    finally:
        stop.set()
        writer.join(30)
    assert proc.returncode != 0, proc.stdout
    assert "changed while it was read (hashed twice, differently)" in proc.stderr, proc.stderr
    listed = net.get("/v1/files", limit="500")["items"]
    assert all(f["name"] != src.name for f in listed)


def test_a_push_needs_the_pushers_own_reservation(net: Cluster) -> None:
    n2 = net.nodes["n2"]
    before = net.status(n2)
    data = b"pushed without permission " * 100
    cid = hash_chunk(data)
    mine = _reserve(net, "n2", "alice")

    # unsigned, unknown reservation, someone else's reservation: each refused
    r = _put(net, "n2", data, mine, None)
    assert r.status_code == 401, r.text
    r = _put(net, "n2", data, "doesnotexist0000", "mallory")
    assert r.status_code == 409 and r.json()["type"].endswith("reservation-error"), r.text
    r = _put(net, "n2", data, mine, "mallory")
    assert r.status_code == 403 and "not issued to" in r.json()["detail"], r.text
    # a reservation requested in someone else's name is refused too
    r = _ask_reservation(net, "n2", "mallory", requester="alice")
    assert r.status_code == 403, r.text
    # nothing changed at the holder
    assert not n2.chunk_path(cid).exists()
    after = net.status(n2)
    assert (after["used_bytes"], after["chunks"]) == (before["used_bytes"], before["chunks"])

    # the owner of the reservation may push; the same signed push again is a replay
    target = f"/v1/chunks/{cid}?reservation={mine}"
    headers = {"Content-Type": "application/octet-stream", **_signed_put(target, cid, "alice")}
    url = _holder_url(net, "n2", target)
    r = httpx.put(url, content=data, headers=headers, verify=False, timeout=10)
    assert r.status_code == 201, r.text
    assert n2.chunk_path(cid).is_file()
    r = httpx.put(url, content=data, headers=headers, verify=False, timeout=10)
    assert r.status_code == 401 and "replay" in r.json()["detail"], r.text


def test_a_node_whose_certificate_is_not_the_pinned_one_is_refused(net: Cluster) -> None:
    n2, n3 = net.nodes["n2"], net.nodes["n3"]
    # n2's address with n3's certificate pin: what a client sees if n2 poses as n3
    forged = n2.address.partition("#")[0] + "#" + n3.address.partition("#")[2]

    async def fetch(address: str) -> None:
        async with new_session() as session, StreamPool() as streams:
            await PeerClient(session, streams).get_chunk(address, "0" * 64, 1)

    with pytest.raises(Unavailable, match="does not match the pinned fingerprint"):
        asyncio.run(fetch(forged))
    # n2 itself still answers with its own pin (404: it has no such chunk)
    with pytest.raises(Exception, match="no chunk"):
        asyncio.run(fetch(n2.address))
