"""A download's memory on real processes: the chunks it holds at once stay within its node's
fetch budget, whatever the file's chunk size (``core.scheduler.fetch_limits``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.network.cluster import cluster, make_file, sha256

pytestmark = pytest.mark.timeout(300)

MiB = 2**20


def peak_rss(pid: int) -> int:
    """Return the peak resident size of process ``pid`` so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def test_a_download_of_64mib_chunks_holds_two_of_them_at_once(tmp_path: Path) -> None:
    # 4 chunks of 64 MiB on two holders: the node's 8 requests in all and 4 per holder would
    # hold all four (256 MiB); within the 32 MiB budget a download holds two (128 MiB)
    with cluster(tmp_path / "net", nodes=3, storage="2GiB") as c:
        n1, n3 = c.nodes["n1"], c.nodes["n3"]
        src = tmp_path / "big.bin"
        digest = make_file(src, 4 * 64 * MiB)
        up = c.cli_json(
            n1,
            "upload",
            str(src),
            "--chunk-size",
            "64MiB",
            "--replicas",
            "1",
            "--alloc",
            "n2=1GiB",
            "--no-encrypt",
        )
        assert up["chunks"] == 4

        before = peak_rss(n3.proc.popen.pid)
        out = tmp_path / "copy.bin"
        down = c.download(n3, up["file_id"], out)
        grown = peak_rss(n3.proc.popen.pid) - before

        assert (down["sha256"], sha256(out)) == (digest, digest)
        assert {s["name"] for s in down["sources"]} == {"n1", "n2"}
        # more than one chunk buffer (the measure sees them), fewer than three: 128 MiB here,
        # against 505 MiB with the node's limits alone (the endgame's second copies too)
        assert 64 * MiB < grown < 3 * 64 * MiB, f"grew {grown / MiB:.0f} MiB"
