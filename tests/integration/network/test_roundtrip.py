"""Upload then download between real processes: a tracker and four nodes on loopback."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.network.cluster import Cluster, cluster, make_file, sha256

pytestmark = pytest.mark.timeout(300)

CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("net"), nodes=4) as c:
        yield c


@pytest.mark.parametrize(
    ("size", "chunk"),
    [(0, "64KiB"), (1, "64KiB"), (5 * CHUNK + 12345, "64KiB"), (100 * 2**20, "4MiB")],
    ids=["0B", "1B", "odd", "100MiB"],
)
def test_upload_then_download_elsewhere(
    net: Cluster, tmp_path: Path, size: int, chunk: str
) -> None:
    n1, n4 = net.nodes["n1"], net.nodes["n4"]
    src = tmp_path / f"file-{size}.bin"
    digest = make_file(src, size)

    up = net.upload(n1, src, "--chunk-size", chunk)
    assert (up["size"], up["sha256"], up["name"]) == (size, digest, src.name)
    assert up["chunks"] == len(range(0, size, 2 ** (16 if chunk == "64KiB" else 22)))
    assert up["replicas"] == 2

    # the tracker lists it, each chunk on 2 distinct holders besides the owner n1
    detail = net.get(f"/v1/files/{up['file_id']}")
    assert detail["manifest"]["file_id"] == up["file_id"]
    assert detail["owner"] == n1.node_id
    for ch in detail["chunks"]:
        holders = [h["node_id"] for h in ch["holders"]]
        assert len(holders) == len(set(holders)) == 3
        assert n1.node_id in holders
    listed = net.get("/v1/files", name=src.name)["items"]
    assert [f["file_id"] for f in listed] == [up["file_id"]]

    # every holder really has its chunks on disk, and no reservation is left behind
    by_id = {n.node_id: n for n in net.nodes.values()}
    for ch in detail["chunks"]:
        for h in ch["holders"]:
            assert by_id[h["node_id"]].chunk_path(ch["chunk_id"]).is_file()
    for node in net.nodes.values():
        assert net.status(node)["reserved_bytes"] == 0, node.name

    out = tmp_path / "out" / src.name
    out.parent.mkdir()
    down = net.download(n4, up["file_id"], out)
    assert down["file_id"] == up["file_id"]
    assert (down["bytes"], down["sha256"], down["path"]) == (size, digest, str(out))
    assert sha256(out) == digest
    assert not list(out.parent.glob("*.part*"))
    # who served it, by name: every chunk n4 did not hold itself, from the other holders
    own = sum(1 for ch in detail["chunks"] if n4.node_id in {h["node_id"] for h in ch["holders"]})
    assert sum(src["chunks"] for src in down["sources"]) == up["chunks"] - own
    assert {src["name"] for src in down["sources"]} <= {"n1", "n2", "n3"}
    assert all(h["name"] for ch in detail["chunks"] for h in ch["holders"])

    # the downloader is now a holder of every chunk, and the download was counted
    after = net.get(f"/v1/files/{up['file_id']}")
    assert after["downloads"] == 1
    for ch in after["chunks"]:
        assert n4.node_id in {h["node_id"] for h in ch["holders"]}

    # n4 is no longer a leecher: its report of completion ended that, with no "stopped" after
    assert n4.node_id not in {n["node_id"] for n in after["leechers"]}
    with sqlite3.connect(net.root / "tracker" / "tracker.db") as db:
        kinds = [
            kind
            for (kind,) in db.execute(
                "SELECT kind FROM events WHERE file_id = ? AND node_id = ? ORDER BY id",
                (up["file_id"], n4.node_id),
            )
        ]
    assert [k for k in kinds if k.startswith(("leecher", "download"))] == [
        "leecher-started",
        "download-completed",
    ]


def test_an_existing_output_is_kept_unless_forced(net: Cluster, tmp_path: Path) -> None:
    n1, n2 = net.nodes["n1"], net.nodes["n2"]
    src = tmp_path / "keep.bin"
    make_file(src, 3 * CHUNK)
    up = net.upload(n1, src, "--chunk-size", "64KiB")
    out = tmp_path / "existing.bin"
    out.write_bytes(b"precious")
    refused = net.cli(n2, "download", up["file_id"], "-o", str(out))
    assert refused.returncode == 1
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert out.read_bytes() == b"precious"
    net.download(n2, up["file_id"], out, "--force")
    assert sha256(out) == sha256(src)


def test_reupload_of_the_same_file_is_idempotent(net: Cluster, tmp_path: Path) -> None:
    n2 = net.nodes["n2"]
    src = tmp_path / "twice.bin"
    make_file(src, 2 * CHUNK + 1)
    first = net.upload(n2, src, "--chunk-size", "64KiB")
    second = net.upload(n2, src, "--chunk-size", "64KiB")
    assert first["file_id"] == second["file_id"]
    assert len(net.get("/v1/files", name="twice.bin")["items"]) == 1


def test_the_same_bytes_under_another_name_or_owner_are_refused(
    net: Cluster, tmp_path: Path
) -> None:
    n2, n3 = net.nodes["n2"], net.nodes["n3"]
    src = tmp_path / "mine.bin"
    make_file(src, CHUNK + 7)
    up = net.upload(n2, src, "--chunk-size", "64KiB")
    renamed = net.cli(n2, "upload", str(src), "--auto", "--chunk-size", "64KiB", "--name", "b.bin")
    assert renamed.returncode == 1
    assert "already shared these bytes as 'mine.bin'" in renamed.stderr
    other = net.cli(n3, "upload", str(src), "--auto", "--chunk-size", "64KiB")
    assert other.returncode == 1
    assert f"already shared as 'mine.bin' (file id {up['file_id']})" in other.stderr
    assert net.get("/v1/files", name="b.bin")["items"] == []
    assert net.get(f"/v1/files/{up['file_id']}")["owner"] == n2.node_id
