"""Manifest creation speed against ``sha256sum`` on the same file (a figure, not a test).

usage: python bench/hash_chunks.py [--size 1GiB] [--chunk-size 4MiB] [--runs 3] [--file PATH]

Writes a file of random bytes in a temp dir (unless --file is given), reads it once to warm the
page cache, then times, alternately, p2pshare's streaming hasher (file SHA-256 + every chunk's
SHA-256 + Merkle root) and ``sha256sum`` (one SHA-256 of the file). Prints MB/s per run and the
medians. Both read from the page cache, so this measures hashing, not the disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from p2pshare.core.sizes import format_size, parse_size
from p2pshare.storage.hasher import hash_file_sync


def make_file(path: Path, size: int) -> None:
    block = 8 * 1024 * 1024
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(block, left)
            fh.write(os.urandom(n))
            left -= n


def time_ours(path: Path, chunk_size: int) -> float:
    start = time.perf_counter()
    hash_file_sync(path, chunk_size=chunk_size, created=datetime.now(UTC))
    return time.perf_counter() - start


def time_sha256sum(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--chunk-size", default="4MiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--file", type=Path)
    args = parser.parse_args()
    chunk_size = parse_size(args.chunk_size)
    if shutil.which("sha256sum") is None:
        print("sha256sum not found (coreutils)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "bench.bin"
        if args.file is None:
            make_file(path, parse_size(args.size))
        size = path.stat().st_size
        mb = size / 1e6
        print(f"file {format_size(size)}, chunk size {format_size(chunk_size)}, {args.runs} runs")
        time_sha256sum(path)  # warm-up: page cache and CPU clocks
        ours, theirs = [], []
        for i in range(args.runs):
            ours.append(mb / time_ours(path, chunk_size))
            theirs.append(mb / time_sha256sum(path))
            print(
                f"  run {i + 1}: p2pshare manifest {ours[-1]:8.1f} MB/s"
                f"   sha256sum {theirs[-1]:8.1f} MB/s"
            )
        print(
            f"median: p2pshare manifest {statistics.median(ours):.1f} MB/s, "
            f"sha256sum {statistics.median(theirs):.1f} MB/s, "
            f"ratio {statistics.median(ours) / statistics.median(theirs):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
