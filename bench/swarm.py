"""One seeder and N downloaders, every host's upload capped at the same rate (a figure, not a test).

usage: python bench/swarm.py [--size 32MiB] [--rate 16mbit] [--downloaders 4] [--chunk-size 256KiB]

Runs on the multi-host test bed of ``tests/e2e/netbed.py`` (network namespaces on a bridge,
so it needs root and iproute2): a tracker on host t, a host ``up`` that uploads a file of
random bytes with ``--replicas 1`` onto the seeder host ``s`` and is then killed (the tracker's
repair grace is long, so nothing is copied elsewhere: ``s`` is the one online holder), and N
downloader hosts that join after that, so they hold nothing. The seeder and every downloader
get a tbf qdisc capping what they send at ``--rate``; what they receive is not capped. All N
downloads start at once (the real CLI). Prints the distribution time T (from starting the
downloads until the last one finished), the lower bound of the fluid model of peer-to-peer
distribution, T_min = max(F/u_s, N*F/(u_s + sum u_i)), and T/T_min, then each downloader's
time and how many chunks it got from the seeder and from other downloaders.

The caps count bytes on the wire (TCP/IP and HTTP overhead included, a few percent), while
T_min counts file bytes only; and every download starts a CLI process and hashes the file at
its end, all on this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from p2pshare.core.sizes import format_size, parse_size

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the test bed
from tests.e2e.netbed import NetBed, NetBedUnavailable
from tests.integration.network.cluster import make_file

POLL = 0.05
"""Seconds between checks of which downloads have finished (the resolution of T)."""
DOWNLOAD_TIMEOUT = 1800.0
"""Seconds all downloads may take before the run is abandoned."""

_TC_UNITS = {
    "bit": 1,
    "kbit": 1e3,
    "mbit": 1e6,
    "gbit": 1e9,
    "kibit": 1024,
    "mibit": 1024**2,
    "gibit": 1024**3,
    "bps": 8,
    "kbps": 8e3,
    "mbps": 8e6,
    "gbps": 8e9,
    "kibps": 8 * 1024,
    "mibps": 8 * 1024**2,
    "gibps": 8 * 1024**3,
}


def tc_rate(rate: str) -> float:
    """A tc rate ("16mbit", "2mbps", "512kibit") in bytes per second."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", rate)
    unit = m.group(2).lower() if m else ""
    if m is None or (unit or "bit") not in _TC_UNITS:
        raise SystemExit(f"--rate {rate!r}: give a tc rate such as 16mbit, 2mbps or 512kibit")
    return float(m.group(1)) * _TC_UNITS[unit or "bit"] / 8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="32MiB", help="file size (default 32MiB)")
    p.add_argument("--rate", default="16mbit", help="every host's upload cap, a tc rate")
    p.add_argument("--downloaders", type=int, default=4)
    p.add_argument("--chunk-size", default="256KiB")
    args = p.parse_args()
    size = parse_size(args.size)
    u = tc_rate(args.rate)
    n = args.downloaders
    if not 1 <= n <= 200:
        raise SystemExit("--downloaders: 1 to 200")
    downloaders = [f"d{i}" for i in range(1, n + 1)]

    with tempfile.TemporaryDirectory(prefix="p2pshare-swarm-") as tmp:
        root = Path(tmp)
        src = root / "popular.bin"
        digest = make_file(src, size)
        storage = format_size(max(size * 2, 1 << 30)).replace(" ", "")
        try:
            bed = NetBed(["t", "up", "s", *downloaders], root / "bed").up()
        except NetBedUnavailable as exc:
            raise SystemExit(f"cannot run: {exc}") from None
        try:
            # a long grace: the uploader's death must not make the tracker copy its chunks
            bed.start_tracker("t", "--repair-grace", "3600")
            bed.start_nodes("up", "s", storage=storage)
            bed.wait_online(2)
            up = bed.cli_json(
                "up",
                "upload",
                str(src),
                "--auto",
                "--replicas",
                "1",
                "--chunk-size",
                args.chunk_size,
                timeout=600,
            )
            file_id = str(up["file_id"])
            bed.kill_host("up")
            bed.wait_node("up", online=False)
            seeder = bed.nodes["s"].node_id
            detail = bed.tracker_get(f"/v1/files/{file_id}")
            chunks = len(detail["chunks"])
            for ch in detail["chunks"]:
                online = [h["node_id"] for h in ch["holders"] if h["online"]]
                if online != [seeder]:
                    raise SystemExit(f"chunk {ch['index']} is not on the seeder alone: {ch}")
            bed.start_nodes(*downloaders, storage=storage)
            bed.wait_online(1 + n, timeout=60)
            for h in ("s", *downloaders):
                bed.cap(h, args.rate)
            for h in downloaders:
                (root / h).mkdir()

            started = time.monotonic()
            procs = {
                h: bed.cli_popen(h, "download", file_id, "-o", str(root / h / src.name))
                for h in downloaders
            }
            finished: dict[str, float] = {}
            while len(finished) < n:
                if time.monotonic() - started > DOWNLOAD_TIMEOUT:
                    raise SystemExit(f"the downloads took more than {DOWNLOAD_TIMEOUT:.0f}s")
                for h, proc in procs.items():
                    if h not in finished and proc.poll() is not None:
                        finished[h] = time.monotonic() - started
                time.sleep(POLL)
            total = max(finished.values())

            ids = {bed.nodes[h].node_id: h for h in downloaders}
            rows = []
            for h, proc in procs.items():
                out, err = proc.communicate()
                if proc.returncode != 0:
                    raise SystemExit(f"{h}: download failed: {err.decode(errors='replace')}")
                res = json.loads(out)
                if res["sha256"] != digest:
                    raise SystemExit(f"{h}: the downloaded file differs from the original")
                by = {
                    ids.get(s["node_id"], "seeder" if s["node_id"] == seeder else "?"): s["chunks"]
                    for s in res["sources"]
                }
                peers = sum(v for k, v in by.items() if k in downloaders)
                detail_by = ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
                rows.append((h, finished[h], by.get("seeder", 0), peers, detail_by))
        finally:
            bed.close()

    t_min = max(size / u, n * size / (u + n * u))
    print(
        f"file F = {format_size(size)} ({size} bytes) in {chunks} chunks of {args.chunk_size}; "
        f"1 seeder + N = {n} downloaders; every host's upload capped at {args.rate} "
        f"(u = {u / 1e6:.2f} MB/s, tbf)"
    )
    print(f"T      = {total:7.2f} s   (start of all downloads until the last one finished)")
    print(
        f"T_min  = {t_min:7.2f} s   (max(F/u_s, N*F/(u_s + sum u_i)) = "
        f"max({size / u:.2f}, {n * size / (u + n * u):.2f}))"
    )
    print(f"T/T_min = {total / t_min:.2f}")
    print(f"seeder alone (N*F/u_s) would take {n * size / u:.2f} s")
    print("downloader   done (s)   from seeder   from downloaders   sources")
    for h, done, from_seeder, peers, by in rows:
        print(f"{h:<10} {done:10.2f} {from_seeder:13d} {peers:18d}   {by}")


if __name__ == "__main__":
    main()
