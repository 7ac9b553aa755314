"""Helpers for the chunk store tests: chunks, streams, a clock to advance, a look at the disk."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

KiB = 1024


def make_chunk(seed: int, size: int = 4 * KiB) -> tuple[str, bytes]:
    """Return ``(chunk_id, data)`` for ``size`` deterministic pseudo-random bytes."""
    data = random.Random(seed).randbytes(size)
    return hashlib.sha256(data).hexdigest(), data


async def stream(data: bytes, piece: int = KiB, delay: float = 0.0) -> AsyncIterator[bytes]:
    """Yield ``data`` in pieces of ``piece`` bytes, pausing ``delay`` seconds before each."""
    for start in range(0, len(data), piece):
        await asyncio.sleep(delay)
        yield data[start : start + piece]


class FakeClock:
    """A clock that stands still until the test moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def files_under(path: Path) -> list[Path]:
    """Return every regular file under ``path``, sorted (blocking: call it in a thread)."""
    return sorted(p for p in path.rglob("*") if p.is_file())


def chunk_files(data_dir: Path) -> list[Path]:
    """Return every file under ``data_dir/chunks``, temp files included (blocking)."""
    return files_under(data_dir / "chunks")


def temp_files(data_dir: Path) -> list[Path]:
    """Return the temp files under ``data_dir/chunks`` (blocking)."""
    return [p for p in chunk_files(data_dir) if p.name.endswith(".tmp")]


def total_size(paths: list[Path]) -> int:
    """Return the summed size of the files at ``paths`` (blocking)."""
    return sum(p.stat().st_size for p in paths)
