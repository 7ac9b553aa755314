"""Chunk plans: how a file of a given size is cut into chunks.

Every chunk but the last is exactly ``chunk_size`` bytes; the last holds the rest (1 to
``chunk_size`` bytes). An empty file has no chunks at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from p2pshare.core.errors import InvalidSize
from p2pshare.core.sizes import format_size

KiB = 1024
MiB = 1024 * KiB
DEFAULT_CHUNK_SIZE = 8 * MiB
"""Measured (``docs/performance.md``, "What was changed"): against 4 MiB, the same bench
runs gave three downloads at once 7% more, uploads 16% more and one download the same, with
the downloads' memory unchanged (:func:`p2pshare.core.scheduler.fetch_limits`). 16 MiB gave
three downloads at once 10% more only with half the requests in flight (the fetch budget's
2), which cost one download 7% and would halve the holders a download uses at once on a real
network; with as many in flight as 8 MiB it gave the same, and took the uploading node over
its memory target."""
MIN_CHUNK_SIZE = 64 * KiB
MAX_CHUNK_SIZE = 64 * MiB
MAX_CHUNKS = 2**20
"""Most chunks one manifest may list (8 TiB at the default chunk size)."""


def validate_chunk_size(chunk_size: int) -> int:
    """Return ``chunk_size`` when it is a power of two from 64 KiB to 64 MiB.

    Raises :class:`InvalidSize` otherwise.
    """
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
        or chunk_size & (chunk_size - 1)
    ):
        raise InvalidSize(
            f"chunk size must be a power of two from {format_size(MIN_CHUNK_SIZE)} "
            f"to {format_size(MAX_CHUNK_SIZE)}, got {chunk_size!r}"
        )
    return chunk_size


def chunk_count(size: int, chunk_size: int) -> int:
    """Return how many chunks a file of ``size`` bytes has (0 for an empty file)."""
    return -(-size // chunk_size)


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """Where one chunk lies in its file."""

    index: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """The cut of a file of ``size`` bytes into chunks of ``chunk_size`` bytes.

    Construct with :meth:`for_size`, which validates both numbers.
    """

    size: int
    chunk_size: int

    @classmethod
    def for_size(cls, size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ChunkPlan:
        """Return the plan for ``size`` bytes; raise :class:`InvalidSize` for bad numbers."""
        validate_chunk_size(chunk_size)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidSize(f"file size must be a non-negative integer, got {size!r}")
        if chunk_count(size, chunk_size) > MAX_CHUNKS:
            raise InvalidSize(
                f"a file of {format_size(size)} needs more than {MAX_CHUNKS} chunks of "
                f"{format_size(chunk_size)}; use a larger chunk size"
            )
        return cls(size, chunk_size)

    @property
    def count(self) -> int:
        """Return the number of chunks."""
        return chunk_count(self.size, self.chunk_size)

    def span(self, index: int) -> ChunkSpan:
        """Return the span of chunk ``index``; raise :class:`IndexError` when out of range."""
        if not 0 <= index < self.count:
            raise IndexError(f"chunk index {index} out of range 0..{self.count - 1}")
        offset = index * self.chunk_size
        return ChunkSpan(index, offset, min(self.chunk_size, self.size - offset))

    def __iter__(self) -> Iterator[ChunkSpan]:
        return (self.span(i) for i in range(self.count))
