"""Withdrawing a file: only its owner may, and every holder reclaims the space."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.network.cluster import Cluster, cluster, sha256

pytestmark = pytest.mark.timeout(300)

CHUNK = 64 * 1024
RECLAIM_DEADLINE = 30.0


def test_the_owner_withdraws_a_file_and_holders_reclaim_its_chunks(tmp_path: Path) -> None:
    with cluster(tmp_path / "net", nodes=4) as c:
        n1, n2, n4 = c.nodes["n1"], c.nodes["n2"], c.nodes["n4"]
        shared = os.urandom(CHUNK)
        a, b = tmp_path / "a.bin", tmp_path / "b.bin"
        a.write_bytes(shared + os.urandom(3 * CHUNK + 10))
        b.write_bytes(shared + os.urandom(CHUNK + 20))
        up_a = c.upload(n1, a, "--replicas", "2", "--chunk-size", "64KiB")
        up_b = c.upload(n2, b, "--replicas", "2", "--chunk-size", "64KiB")
        detail_a = c.get(f"/v1/files/{up_a['file_id']}")
        shared_id = detail_a["chunks"][0]["chunk_id"]
        held_a = {
            (h["node_id"], ch["chunk_id"]) for ch in detail_a["chunks"] for h in ch["holders"]
        }
        by_id = {n.node_id: n for n in c.nodes.values()}
        used_before = {n.name: c.status(n)["used_bytes"] for n in c.nodes.values()}

        # another node may not withdraw it: one line, nothing changes
        refused = c.cli(n2, "delete", up_a["file_id"], "--yes")
        assert refused.returncode == 1
        assert refused.stderr.startswith("p2pshare: error:") and "does not own" in refused.stderr
        assert c.get(f"/v1/files/{up_a['file_id']}")["manifest"]["file_id"] == up_a["file_id"]

        receipt = c.cli_json(n1, "delete", up_a["file_id"], "--yes")
        assert receipt["file_id"] == up_a["file_id"]
        gone = c.get(f"/v1/files/{up_a['file_id']}")
        assert "withdrawn" in gone["detail"]
        assert [f["file_id"] for f in c.get("/v1/files")["items"]] == [up_b["file_id"]]

        # every copy of a chunk only file a used is deleted; the shared one stays
        deadline = time.monotonic() + RECLAIM_DEADLINE
        while True:
            left = [
                (by_id[n].name, cid)
                for n, cid in held_a
                if cid != shared_id and by_id[n].chunk_path(cid).exists()
            ]
            if not left:
                break
            assert time.monotonic() < deadline, f"not reclaimed: {left}"
            time.sleep(0.3)
        for n, cid in held_a:
            if cid == shared_id:
                assert by_id[n].chunk_path(cid).is_file()
        freed = {n.name: used_before[n.name] - c.status(n)["used_bytes"] for n in c.nodes.values()}
        assert freed["n1"] == a.stat().st_size - CHUNK  # the owner's copies, minus the shared
        assert all(v >= 0 for v in freed.values())

        out = tmp_path / "b-copy.bin"
        assert c.download(n4, up_b["file_id"], out)["sha256"] == sha256(b) == sha256(out)
        # withdrawing twice is fine; downloading a withdrawn file is a clear refusal
        assert c.cli_json(n1, "delete", up_a["file_id"], "--yes")["file_id"] == up_a["file_id"]
        late = c.cli(n4, "download", up_a["file_id"], "-o", str(tmp_path / "late.bin"))
        assert late.returncode == 1 and "withdrawn" in late.stderr
        assert not (tmp_path / "late.bin").exists()


def test_deleting_an_unknown_file_changes_nothing(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_tracker()
        n1 = c.start_node("n1")
        c.wait_online(1)
        proc = c.cli(n1, "delete", "ab" * 32, "--yes")
        assert proc.returncode == 1 and "no file" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    finally:
        c.close()
