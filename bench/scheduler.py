"""The download scheduler's own cost per chunk as files grow (a figure, not a test).

usage: python bench/scheduler.py [--chunks 256,1024,4096,16384] [--holders 3]

Drives ``core.scheduler.DownloadScheduler`` as a download does, with no I/O: every chunk on
``--holders`` holders, the node's bounds (4 requests per holder, 8 in all), requests answered
one at a time, oldest first. Prints the CPU seconds and microseconds per chunk for each file
size (4 MiB chunks: 16,384 chunks is a 64 GiB file). A cost per chunk that grows with the
file is a cost per file that grows with its square.
"""

from __future__ import annotations

import argparse
import time
from collections import deque

from p2pshare.core.scheduler import ChunkSource, DownloadScheduler, Request


def simulate(chunks: int, holders: int) -> float:
    """Return the CPU seconds the scheduler takes over a download of ``chunks`` chunks."""
    names = tuple(f"h{i}" for i in range(holders))
    sources = [ChunkSource(f"{i:064x}", 4 << 20, (i,), names) for i in range(chunks)]
    start = time.process_time()
    sched = DownloadScheduler(sources, per_holder=4, total=8)
    flying: deque[Request] = deque()
    while not sched.finished:
        flying.extend(sched.next_requests())
        r = flying.popleft()
        sched.done(r.chunk_id, r.holder)
        for loser in sched.cancelled():
            flying.remove(loser)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", default="256,1024,4096,16384")
    parser.add_argument("--holders", type=int, default=3)
    args = parser.parse_args()
    for n in (int(x) for x in args.chunks.split(",")):
        seconds = simulate(n, args.holders)
        print(f"{n:7,d} chunks: {seconds:8.3f} CPU s, {seconds / n * 1e6:8.1f} us per chunk")


if __name__ == "__main__":
    main()
