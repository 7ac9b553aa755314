"""Swarming: downloaders of one file fetch from each other, not only from its holders."""

from __future__ import annotations

import json
import subprocess
import sys
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
