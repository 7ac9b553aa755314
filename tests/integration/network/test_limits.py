"""Per-node rate limits and the cap on peers served, between real processes.

The rate checks are lower bounds (a capped node cannot move N bytes faster than N / rate,
less its burst), so they cannot fail on a slow machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.integration.network.cluster import Cluster, make_file, plain, sha256

pytestmark = pytest.mark.timeout(300)

MIB = 2**20
RATE = "1MiB"
BURST = 1 * MIB
"""The limiter's burst for a 1 MiB/s rate: max(1 MiB, rate / 4)."""


def test_upload_and_download_rates_are_capped(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_tracker()
        slow_up = c.start_node("n1", "64MiB", "--max-upload-rate", RATE)
        c.start_node("n2", "64MiB")
        slow_down = c.start_node("n3", "64MiB", "--max-download-rate", RATE)
        c.wait_online(3)
        src = tmp_path / "paced.bin"
        size = 3 * MIB + 7
        digest = make_file(src, size)

        started = time.monotonic()
        args = ["--replicas", "1", "--chunk-size", "1MiB", "--alloc", "n2=64MiB"]
        up = c.cli_json(slow_up, "upload", str(src), *args)
        took = time.monotonic() - started
        assert took >= (size - BURST) / MIB * 0.95, f"upload of {size} bytes took {took:.2f}s"

        started = time.monotonic()
        out = tmp_path / "copy.bin"
        down = c.download(slow_down, up["file_id"], out)
        took = time.monotonic() - started
        assert down["sha256"] == digest == sha256(out)
        assert took >= (size - BURST) / MIB * 0.95, f"download of {size} bytes took {took:.2f}s"
    finally:
        c.close()


def test_a_node_serving_its_cap_of_peers_turns_more_away(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_tracker()
        holder = c.start_node(
            "n1", "64MiB", "--max-peers-served", "1", "--max-upload-rate", "256KiB"
        )
        c.start_node("n2", "64MiB")
        c.wait_online(2)
        src = tmp_path / "big-chunk.bin"
        make_file(src, MIB)
        up = c.upload(holder, src, "--replicas", "1", "--chunk-size", "1MiB")
        chunk_id = c.get(f"/v1/files/{up['file_id']}")["chunks"][0]["chunk_id"]
        url = plain(holder.address, f"/v1/chunks/{chunk_id}")
        with (
            httpx.Client(timeout=30, verify=False) as client,
            client.stream("GET", url) as first,
        ):
            assert first.status_code == 200
            second = httpx.get(url, timeout=10, verify=False)  # the first is still paced out
            assert second.status_code == 503, second.text
            assert "ask another holder" in second.json()["detail"]
            assert sum(len(p) for p in first.iter_bytes()) == MIB
        # the slot is free again once the first handler has returned, which may come a moment
        # after its last byte reached the client (a bounded wait, not a sleep)
        deadline = time.monotonic() + 10
        while (status := httpx.get(url, timeout=30, verify=False).status_code) == 503:
            assert time.monotonic() < deadline, "the serving slot was never given back"
            time.sleep(0.05)
        assert status == 200
    finally:
        c.close()
