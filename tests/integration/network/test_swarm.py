"""Swarming: downloaders of one file fetch from each other, not only from its holders."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.network.cluster import Cluster, _clean_env, make_file, sha256

pytestmark = pytest.mark.timeout(300)

DOWNLOADERS = ("d1", "d2", "d3", "d4")


def test_four_downloaders_at_once_serve_each_other(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_tracker()
        # the seeders are slow (1 MiB/s out each); the downloaders are not
        seed = c.start_node("s1", "64MiB", "--max-upload-rate", "1MiB")
        c.start_node("s2", "64MiB", "--max-upload-rate", "1MiB")
        c.wait_online(2)
        src = tmp_path / "popular.bin"
        digest = make_file(src, 6 * 2**20 + 3)
        up = c.upload(seed, src, "--replicas", "1", "--chunk-size", "256KiB")
        for name in DOWNLOADERS:
            c.start_node(name, "64MiB")
        c.wait_online(2 + len(DOWNLOADERS))

        procs = {}
        for name in DOWNLOADERS:  # all at once
            node = c.nodes[name]
            cmd = [sys.executable, "-m", "p2pshare", "--json", "download", up["file_id"]]
            cmd += ["-o", str(tmp_path / f"{name}.bin"), "--node", node.control_url]
            procs[name] = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env()
            )
        results = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"{name}: {err}"
            results[name] = json.loads(out)
        downloader_ids = {c.nodes[n].node_id for n in DOWNLOADERS}
        from_peers = 0
        for name, res in results.items():
            assert res["sha256"] == digest == sha256(tmp_path / f"{name}.bin")
            assert sum(s["chunks"] for s in res["sources"]) == 25
            from_peers += sum(s["chunks"] for s in res["sources"] if s["node_id"] in downloader_ids)
        assert from_peers > 0, "no downloader fetched a chunk from another downloader"
        # every downloader is now a holder of every chunk, for the next ones
        d = c.get(f"/v1/files/{up['file_id']}")
        for ch in d["chunks"]:
            assert downloader_ids <= {h["node_id"] for h in ch["holders"]}
    finally:
        c.close()


def test_a_downloaded_file_is_served_from_itself_and_only_while_unchanged(
    tmp_path: Path,
) -> None:
    """A downloader keeps no second copy of what it downloaded: it serves the chunks from the
    file, after a restart too; once the user changes the file it serves them no more."""
    c = Cluster(tmp_path)
    try:
        c.start_tracker()
        up_node = c.start_node("u", "64MiB")
        c.start_node("h", "64MiB")
        c.wait_online(2)
        src = tmp_path / "f.bin"
        digest = make_file(src, 3 * 2**20 + 5)
        up = c.upload(up_node, src, "--replicas", "1", "--chunk-size", "256KiB")
        fid = up["file_id"]
        d1 = c.start_node("d1", "64MiB")
        c.wait_online(3)
        kept = tmp_path / "d1.bin"
        c.download(d1, fid, kept)
        chunk_ids = c.get(f"/v1/files/{fid}")["manifest"]["chunk_ids"]
        assert not any(d1.chunk_path(cid).exists() for cid in chunk_ids)  # no second copy

        for name in ("u", "h", "d1"):  # only d1 is left, and it restarts
            c.kill(name, signal.SIGTERM)
        d1 = c.start_node("d1", "64MiB")
        d2 = c.start_node("d2", "64MiB")
        got = c.download(d2, fid, tmp_path / "d2.bin")
        assert got["sha256"] == digest == sha256(tmp_path / "d2.bin")
        assert {s["node_id"] for s in got["sources"]} == {d1.node_id}

        with kept.open("r+b") as f:  # the user edits the downloaded file
            f.write(b"edited")
        c.kill("d2", signal.SIGTERM)  # d2 must not serve them either
        d3 = c.start_node("d3", "64MiB")
        failed = c.cli(d3, "download", fid, "-o", str(tmp_path / "d3.bin"))
        assert failed.returncode != 0
        assert "no reachable holder" in failed.stderr, failed.stderr
        # d1 found its file changed when asked, and told the tracker at once (not at its
        # next integrity scan, hours later): no chunk lists it as a holder any more
        deadline = time.monotonic() + 15
        while True:
            holders = {
                h["node_id"] for ch in c.get(f"/v1/files/{fid}")["chunks"] for h in ch["holders"]
            }
            if d1.node_id not in holders or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert d1.node_id not in holders
    finally:
        c.close()
