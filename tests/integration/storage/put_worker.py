"""A separate process that puts one chunk into a file store, for the multi-process tests.

    python put_worker.py DATA_DIR SEED SIZE [--wait-go] [--pause] [--hang] [--delay SECONDS]

Prints ``ready`` once the store is open, ``writing`` once the first piece is in the temp file,
and finally a JSON line with the put's result. ``--wait-go`` waits for a line on stdin before
the put starts; ``--pause`` waits for one after the first piece; ``--hang`` never sends more
than the first piece (for a kill). The chunk's bytes are ``make_chunk(SEED, SIZE)``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from p2pshare.storage.filestore import FileChunkStore

PIECE = 1024


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def wait_for_line() -> None:
    await asyncio.to_thread(sys.stdin.readline)


async def pieces(data: bytes, args: argparse.Namespace) -> AsyncIterator[bytes]:
    for index, start in enumerate(range(0, len(data), PIECE)):
        if index == 1:  # asked for the second piece: the first one is in the temp file
            say("writing")
            if args.hang:
                await asyncio.sleep(3600)
            if args.pause:
                await wait_for_line()
        await asyncio.sleep(args.delay)
        yield data[start : start + PIECE]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("seed", type=int)
    parser.add_argument("size", type=int)
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--pause", action="store_true")
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()

    data = random.Random(args.seed).randbytes(args.size)
    chunk_id = hashlib.sha256(data).hexdigest()
    async with await FileChunkStore.open(args.data_dir, quota=2**30) as store:
        say("ready")
        if args.wait_go:
            await wait_for_line()
        result = await store.put(chunk_id, pieces(data, args))
        say(json.dumps({"chunk_id": result.chunk_id, "created": result.created}))


if __name__ == "__main__":
    asyncio.run(main())
