"""Manifests: building, canonical JSON, validation, verify, and the chunk round trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.chunking import ChunkPlan
from p2pshare.core.errors import InvalidManifest, InvalidName
from p2pshare.core.ids import chunk_id
from p2pshare.core.manifest import (
    Manifest,
    ManifestBuilder,
    manifest_of_bytes,
    validate_name,
)
from p2pshare.core.merkle import merkle_root, verify_proof

K64 = 64 * 1024
WHEN = datetime(2026, 11, 25, 8, 0, 0, tzinfo=UTC)


def sample(size: int = 3 * K64 + 17, name: str = "report.pdf") -> Manifest:
    data = bytes(i % 251 for i in range(size))
    return manifest_of_bytes(data, name, WHEN, K64)


def test_fields_of_a_built_manifest() -> None:
    m = sample()
    assert m.size == 3 * K64 + 17
    assert len(m.chunk_ids) == 4
    assert m.file_id == merkle_root(m.chunk_ids)
    assert m.format_version == 1
    m.verify()


def test_empty_file() -> None:
    m = manifest_of_bytes(b"", "empty", WHEN, K64)
    assert m.chunk_ids == []
    assert m.size == 0
    assert m.sha256 == chunk_id(b"")
    assert m.file_id == merkle_root([])
    m.verify()


def test_canonical_json_is_stable_and_round_trips() -> None:
    m = sample()
    raw = m.canonical_json()
    doc = json.loads(raw)
    assert list(doc) == sorted(doc)
    assert b" " not in raw
    assert doc["created"] == "2026-11-25T08:00:00Z"
    again = Manifest.parse(raw)
    assert again == m
    assert again.canonical_json() == raw


def test_created_is_normalised_to_utc_seconds() -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=plus2)
    m = manifest_of_bytes(b"abc", "a", local, K64)
    assert m.model_dump(mode="json")["created"] == "2026-11-25T08:00:00Z"


def test_unicode_name_is_kept_in_canonical_json() -> None:
    m = sample(name="résumé 2026.txt")
    assert "résumé 2026.txt".encode() in m.canonical_json()


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "a\\b", "nul\x00", "tab\there", "new\nline", "x" * 256, "\x7f"]
)
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)
    doc = json.loads(sample().canonical_json())
    doc["name"] = name
    with pytest.raises(InvalidManifest, match="name"):
        Manifest.parse(doc)


@pytest.mark.parametrize("name", ["a", "file.tar.gz", "with space", "ü" * 127, ".hidden"])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


def _mutated(**changes: object) -> dict[str, object]:
    doc = json.loads(sample().canonical_json())
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sha256": "A" * 64}, "sha256"),
        ({"file_id": "00"}, "file_id"),
        ({"chunk_ids": ["0" * 63] * 4}, "chunk_ids"),
        ({"size": -1}, "size"),
        ({"size": 10 * K64}, "manifest"),  # 10 chunks needed, 4 listed
        ({"size": 2 * K64}, "manifest"),  # 2 needed
        ({"chunk_size": 3000}, "chunk_size"),
        ({"chunk_size": 32 * 1024}, "chunk_size"),
        ({"format_version": 2}, "format_version"),
        ({"created": "2026-11-25T08:00:00"}, "created"),  # no time zone
        ({"extra": 1}, "extra"),
    ],
)
def test_inconsistent_manifests_refused(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidManifest, match=field):
        Manifest.parse(_mutated(**changes))


def test_missing_field_refused() -> None:
    doc = _mutated()
    del doc["sha256"]
    with pytest.raises(InvalidManifest, match="sha256"):
        Manifest.parse(doc)


def test_not_json_refused() -> None:
    with pytest.raises(InvalidManifest):
        Manifest.parse(b"{not json")


def test_verify_catches_a_wrong_file_id() -> None:
    m = sample()
    forged = Manifest.parse(_mutated(file_id=chunk_id(b"other")))
    with pytest.raises(InvalidManifest, match="does not match"):
        forged.verify()
    swapped = Manifest.parse(_mutated(chunk_ids=list(reversed(m.chunk_ids))))
    with pytest.raises(InvalidManifest):
        swapped.verify()


def test_builder_refuses_misshapen_chunks() -> None:
    b = ManifestBuilder(K64)
    with pytest.raises(InvalidManifest):
        b.add_chunk(b"")
    with pytest.raises(InvalidManifest):
        b.add_chunk(b"x" * (K64 + 1))
    b.add_chunk(b"short")
    with pytest.raises(InvalidManifest, match="last chunk"):
        b.add_chunk(b"x" * K64)


def test_manifest_proofs() -> None:
    m = sample()
    for i, cid in enumerate(m.chunk_ids):
        assert verify_proof(cid, m.proof(i), m.file_id)
    assert not verify_proof(m.chunk_ids[0], m.proof(1), m.file_id)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5 * K64 + 3), st.sampled_from([K64, 2 * K64, 4 * K64]))
def test_chunk_manifest_reassemble_round_trip(data: bytes, size: int) -> None:
    m = manifest_of_bytes(data, "f", WHEN, size)
    plan = ChunkPlan.for_size(m.size, m.chunk_size)
    chunks = {chunk_id(data[s.offset : s.offset + s.length]): s for s in plan}
    # reassemble from the chunk ids alone, in manifest order
    store = {cid: data[s.offset : s.offset + s.length] for cid, s in chunks.items()}
    rebuilt = b"".join(store[cid] for cid in m.chunk_ids)
    assert rebuilt == data
    again = manifest_of_bytes(rebuilt, "f", WHEN, size)
    assert again.file_id == m.file_id
    assert again.sha256 == chunk_id(data)
    m.verify()


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=3 * K64), st.data())
def test_a_flipped_byte_changes_its_chunk_and_the_file_id(data: bytes, draw: st.DataObject) -> None:
    i = draw.draw(st.integers(min_value=0, max_value=len(data) - 1))
    flipped = bytearray(data)
    flipped[i] ^= 0xFF
    a = manifest_of_bytes(data, "f", WHEN, K64)
    b = manifest_of_bytes(bytes(flipped), "f", WHEN, K64)
    changed = [j for j, (x, y) in enumerate(zip(a.chunk_ids, b.chunk_ids, strict=True)) if x != y]
    assert changed == [i // K64]
    assert a.file_id != b.file_id


def test_builder_halves_must_alternate() -> None:
    b = ManifestBuilder(K64)
    b.take(b"x" * K64)
    with pytest.raises(InvalidManifest, match="before the previous one was named"):
        b.take(b"y" * K64)
    with pytest.raises(InvalidManifest, match="was not named"):
        b.finish("f", datetime(2026, 11, 30, tzinfo=UTC))
    b.name_chunk(chunk_id(b"x" * K64))
    with pytest.raises(InvalidManifest, match="without a chunk taken"):
        b.name_chunk(chunk_id(b"x" * K64))
    b.take(b"tail")
    b.name_chunk(chunk_id(b"tail"))
    built = b.finish("f", datetime(2026, 11, 30, tzinfo=UTC))
    assert built == manifest_of_bytes(b"x" * K64 + b"tail", "f", built.created, K64)
