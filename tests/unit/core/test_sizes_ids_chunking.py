"""Human sizes, ids and chunk plans."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.chunking import MAX_CHUNKS, ChunkPlan, validate_chunk_size
from p2pshare.core.errors import InvalidId, InvalidSize
from p2pshare.core.ids import chunk_id, is_valid_id, validate_id
from p2pshare.core.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("12B", 12),
        ("4MiB", 4 * 1024**2),
        ("4 mib", 4 * 1024**2),
        ("4M", 4 * 1024**2),
        ("10GB", 10 * 1000**3),
        ("10gb", 10 * 1000**3),
        ("1.5KiB", 1536),
        ("2TiB", 2 * 1024**4),
        ("64kB", 64000),
        (" 7 KiB ", 7 * 1024),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "MiB", "-1", "4 XB", "1.3B", "4MiBs", "1e6", "four", "0x10", -5, True, 2.5, None]
)
def test_parse_size_refuses(bad: object) -> None:
    with pytest.raises(InvalidSize):
        parse_size(bad)  # type: ignore[arg-type]


def test_parse_size_message_names_the_input() -> None:
    with pytest.raises(InvalidSize, match="4 XB"):
        parse_size("4 XB")


@given(st.integers(min_value=0, max_value=2**50))
def test_parse_size_of_plain_numbers(n: int) -> None:
    assert parse_size(str(n)) == n


def test_format_size() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(4 * 1024**2) == "4.0 MiB"
    assert format_size(3 * 1024**3 // 2) == "1.5 GiB"


def test_ids() -> None:
    empty = chunk_id(b"")
    assert empty == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert is_valid_id(empty)
    assert validate_id(empty) == empty
    for bad in [empty.upper(), empty[:-1], empty + "0", "g" * 64, 7, None, "../" + empty[3:]]:
        assert not is_valid_id(bad)
        with pytest.raises(InvalidId):
            validate_id(bad, "chunk id")


@given(st.binary(min_size=1, max_size=512), st.data())
def test_any_flipped_byte_changes_the_chunk_id(data: bytes, draw: st.DataObject) -> None:
    i = draw.draw(st.integers(min_value=0, max_value=len(data) - 1))
    bit = draw.draw(st.integers(min_value=0, max_value=7))
    flipped = bytearray(data)
    flipped[i] ^= 1 << bit
    assert chunk_id(bytes(flipped)) != chunk_id(data)


@pytest.mark.parametrize("size", [64 * 1024, 128 * 1024, 4 * 1024**2, 64 * 1024**2])
def test_valid_chunk_sizes(size: int) -> None:
    assert validate_chunk_size(size) == size


@pytest.mark.parametrize("size", [0, 32 * 1024, 3 * 1024**2, 128 * 1024**2, -4, True])
def test_invalid_chunk_sizes(size: int) -> None:
    with pytest.raises(InvalidSize):
        validate_chunk_size(size)


def test_chunk_plan() -> None:
    k = 64 * 1024
    assert list(ChunkPlan.for_size(0, k)) == []
    one = list(ChunkPlan.for_size(1, k))
    assert [(s.index, s.offset, s.length) for s in one] == [(0, 0, 1)]
    exact = ChunkPlan.for_size(2 * k, k)
    assert [(s.offset, s.length) for s in exact] == [(0, k), (k, k)]
    ragged = ChunkPlan.for_size(2 * k + 5, k)
    assert ragged.count == 3
    assert ragged.span(2).length == 5
    with pytest.raises(IndexError):
        ragged.span(3)
    with pytest.raises(InvalidSize):
        ChunkPlan.for_size(-1, k)
    with pytest.raises(InvalidSize, match="larger chunk size"):
        ChunkPlan.for_size((MAX_CHUNKS + 1) * k, k)


@given(st.integers(min_value=0, max_value=2**36), st.integers(min_value=16, max_value=26))
def test_chunk_plan_covers_the_file(size: int, shift: int) -> None:
    plan = ChunkPlan.for_size(size, 1 << shift)
    if plan.count:
        last = plan.span(plan.count - 1)
        assert last.offset + last.length == size
        assert 1 <= last.length <= plan.chunk_size
        assert plan.span(0).offset == 0
    else:
        assert size == 0
