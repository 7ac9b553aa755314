"""Property tests for every parser that reads untrusted text or bytes in core and security.

Covered: share links and file keys (``core.links``), ids and node ids (``core.ids``), sizes
(``core.sizes``), manifests (``core.manifest``), identity key files (``security.keys``),
signature headers, request signing and the replay guard (``security.signing``) and sealed
manifest parts (``security.sealing``).

Each parser gets two kinds of property: a round trip (what the project writes, it reads back
unchanged) and robustness (arbitrary input gives a value or the project's documented error,
never another exception). Parser bugs found here are pinned as ``xfail(strict=True)`` tests
that say what is wrong; once a bug is fixed its test passes, which fails the run, so the mark
is then removed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import random
import string
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from p2pshare.core.chunking import MIN_CHUNK_SIZE, chunk_count
from p2pshare.core.errors import (
    ConfigError,
    IntegrityError,
    InvalidId,
    InvalidInput,
    InvalidManifest,
    InvalidName,
    InvalidSize,
    Unauthenticated,
)
from p2pshare.core.ids import (
    ID_LENGTH,
    NODE_ID_LENGTH,
    chunk_id,
    is_valid_id,
    is_valid_node_id,
    node_id_of,
    validate_id,
    validate_node_id,
)
from p2pshare.core.links import (
    KEY_BYTES,
    MAX_LINK_CHARS,
    SCHEME,
    InvalidLink,
    ShareLink,
    decode_key,
    encode_key,
    format_link,
    parse_link,
)
from p2pshare.core.manifest import Manifest, manifest_of_bytes, validate_name
from p2pshare.core.merkle import merkle_root
from p2pshare.core.sizes import MAX_SIZE, format_size, parse_size
from p2pshare.security import sealing
from p2pshare.security.keys import (
    KEY_FILE,
    Identity,
    fingerprint_of,
    load_or_create_identity,
    public_bytes,
)
from p2pshare.security.signing import (
    HEADER,
    MAX_HEADER_CHARS,
    WEAK_KEYS,
    WINDOW_SECONDS,
    ReplayGuard,
    SignedHeader,
    canonical,
    parse_header,
    sign_request,
    verify,
)
from p2pshare.security.signing import SCHEME as SIG_SCHEME

QUICK = settings(max_examples=150, deadline=None)
"""Cheap properties (pure string work)."""
SLOW = settings(max_examples=40, deadline=None)
"""Properties that hash megabytes, sign, or touch files."""

B64URL = string.ascii_letters + string.digits + "-_"
B32 = "abcdefghijklmnopqrstuvwxyz234567"
HEX = "0123456789abcdef"
B64URL_STD = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
"""The base64url alphabet in value order (A is 0, _ is 63)."""
B64URL_STD_INDEX = {c: i for i, c in enumerate(B64URL_STD)}
PATH_BITS = ["../", "..\\", "/", "\\", "\x00", "/etc/passwd", "C:\\", "./"]
"""Pieces of paths and traversals: each holds a separator or NUL."""

hex_ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
keys32 = st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES)
node_ids = st.binary(min_size=32, max_size=32).map(node_id_of)


def path_like(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Return strings made by putting a path piece (``../``, ``/``, ``\\``, NUL) into ``base``."""

    def insert(text: str, at: int, piece: str) -> str:
        cut = at % (len(text) + 1)
        return text[:cut] + piece + text[cut:]

    return st.builds(insert, base, st.integers(min_value=0), st.sampled_from(PATH_BITS))


# --- share links -----------------------------------------------------------------------------

link_bodies = st.one_of(
    hex_ids,
    hex_ids.map(str.upper),
    hex_ids.map(lambda s: s[:-1]),
    hex_ids.map(lambda s: s + "0"),
    path_like(hex_ids),
    st.text(alphabet=HEX + "/#.:", max_size=70),
    st.text(max_size=80),
)
link_fragments = st.one_of(
    st.just(""),
    st.just("#"),
    keys32.map(lambda k: "#" + encode_key(k)),
    st.text(alphabet=B64URL + "=+/", min_size=40, max_size=46).map(lambda s: "#" + s),
    st.text(max_size=50).map(lambda s: "#" + s),
)
link_like = st.builds(
    lambda lead, scheme, body, frag, trail: lead + scheme + body + frag + trail,
    st.sampled_from(["", " ", "\t", "\n", "\u3000"]),
    st.sampled_from(
        ["", SCHEME, SCHEME.upper(), "p2pshare:/", "p2pshare:", "https://", SCHEME * 2, "://"]
    ),
    link_bodies,
    link_fragments,
    st.sampled_from(["", "/", "//", " ", "\n", "#", "\x00"]),
)


def check_link_or_invalid(text: object) -> ShareLink | None:
    """Parse ``text``; return the link, None on :class:`InvalidLink`, and let all else raise.

    An accepted link must be well formed and read back from its own canonical text.
    """
    try:
        link = parse_link(text)
    except InvalidLink as exc:
        assert exc.code == "invalid-link"
        assert exc.detail
        return None
    assert isinstance(link, ShareLink)
    assert is_valid_id(link.file_id)
    assert link.key is None or len(link.key) == KEY_BYTES
    assert parse_link(str(link)) == link
    return link


@QUICK
@given(hex_ids, st.none() | keys32)
def test_link_round_trip(file_id: str, key: bytes | None) -> None:
    """format_link -> parse_link gives back the same file id and key."""
    text = format_link(file_id, key)
    assert text.startswith(SCHEME)
    assert len(text) <= MAX_LINK_CHARS
    assert parse_link(text) == ShareLink(file_id, key)
    assert str(ShareLink(file_id, key)) == text
    assert parse_link(file_id) == ShareLink(file_id)
    assert parse_link(f"  {text}/\n" if key is None else f"  {text}\n") == ShareLink(file_id, key)


@QUICK
@given(keys32)
def test_key_round_trip_and_only_canonical_text(key: bytes) -> None:
    """decode_key(encode_key(k)) == k, and the 3 other spellings of the last character fail."""
    text = encode_key(key)
    assert len(text) == 43
    assert decode_key(text) == key
    last = B64URL_STD_INDEX[text[-1]]
    for low_bits in (1, 2, 3):
        other = text[:-1] + B64URL_STD[last ^ low_bits]
        with pytest.raises(InvalidLink, match="canonical"):
            decode_key(other)


@QUICK
@given(st.text() | link_like)
def test_parse_link_of_any_text_is_a_link_or_invalid_link(text: str) -> None:
    """Arbitrary text parses to a well-formed link or raises InvalidLink, nothing else."""
    link = check_link_or_invalid(text)
    if link is not None:
        assert "#" in text or link.key is None


@QUICK
@given(st.none() | st.integers() | st.binary() | st.lists(st.text()) | st.floats())
def test_parse_link_of_non_text_is_invalid_link(value: object) -> None:
    """Anything that is not a str is refused with InvalidLink."""
    with pytest.raises(InvalidLink, match="text"):
        parse_link(value)


@QUICK
@given(st.text(max_size=60) | st.text(alphabet=B64URL + "=", min_size=40, max_size=46))
def test_decode_key_of_any_text(text: str) -> None:
    """decode_key returns 32 bytes that encode back to ``text``, or raises InvalidLink."""
    try:
        key = decode_key(text)
    except InvalidLink:
        return
    assert len(key) == KEY_BYTES
    assert encode_key(key) == text


@QUICK
@given(st.binary(max_size=64).filter(lambda b: len(b) != KEY_BYTES))
def test_encode_key_refuses_other_lengths(key: bytes) -> None:
    """Only 32-byte keys are encoded."""
    with pytest.raises(InvalidLink, match="32 bytes"):
        encode_key(key)


@QUICK
@given(path_like(hex_ids) | path_like(st.text(max_size=30)), st.none() | keys32)
def test_path_like_link_is_refused(body: str, key: bytes | None) -> None:
    """A traversal or separator inside the file id part never gets through as a file id."""
    assume(body.rstrip("/") and not is_valid_id(body.rstrip("/")))
    text = SCHEME + body + ("" if key is None else "#" + encode_key(key))
    assert check_link_or_invalid(text) is None


def test_overlong_link_is_refused_before_parsing() -> None:
    """Padding a valid link past MAX_LINK_CHARS is refused, whitespace or not."""
    text = format_link("a" * 64, bytes(32))
    assert parse_link(text).file_id == "a" * 64
    with pytest.raises(InvalidLink, match="at most"):
        parse_link(text + " " * (MAX_LINK_CHARS - len(text) + 1))


# --- ids -------------------------------------------------------------------------------------


@QUICK
@given(st.binary(min_size=32, max_size=32))
def test_node_id_of_any_key_is_valid(key: bytes) -> None:
    """node_id_of(32 bytes) is a valid node id of the documented shape."""
    nid = node_id_of(key)
    assert len(nid) == NODE_ID_LENGTH
    assert nid.startswith("n")
    assert set(nid[1:]) <= set(B32)
    assert is_valid_node_id(nid)
    assert validate_node_id(nid) == nid
    assert node_id_of(key) == nid


@QUICK
@given(node_ids, st.data())
def test_changing_prefix_or_check_characters_is_caught(nid: str, data: st.DataObject) -> None:
    """A change to the ``n`` or to either check character is always refused."""
    at = data.draw(st.sampled_from([0, NODE_ID_LENGTH - 2, NODE_ID_LENGTH - 1]))
    new = data.draw(st.sampled_from(B32 + "n").filter(lambda c: c != nid[at]))
    typo = nid[:at] + new + nid[at + 1 :]
    assert not is_valid_node_id(typo)
    with pytest.raises(InvalidId):
        validate_node_id(typo)


@QUICK
@given(node_ids, st.data())
def test_character_outside_the_alphabet_is_caught(nid: str, data: st.DataObject) -> None:
    """Any position changed to a character outside lowercase base32 is refused."""
    at = data.draw(st.integers(min_value=0, max_value=NODE_ID_LENGTH - 1))
    new = data.draw(st.characters().filter(lambda c: c not in B32))
    assume(not (at == 0 and new == "n"))
    typo = nid[:at] + new + nid[at + 1 :]
    assert not is_valid_node_id(typo)
    with pytest.raises(InvalidId):
        validate_node_id(typo)


def single_substitutions(nid: str) -> list[str]:
    """Return every id that differs from ``nid`` in one base32 character after the ``n``."""
    return [nid[:i] + c + nid[i + 1 :] for i in range(1, len(nid)) for c in B32 if c != nid[i]]


def test_check_characters_catch_almost_every_typo() -> None:
    """Of all single-character typos of 20 ids, at most 1% slip through the 10-bit check."""
    typos = [t for seed in range(20) for t in single_substitutions(node_id_of(bytes([seed]) * 32))]
    accepted = sum(is_valid_node_id(t) for t in typos)
    assert len(typos) == 20 * 34 * 31
    assert accepted / len(typos) < 0.01


def test_every_single_character_typo_of_a_node_id_is_refused() -> None:
    """The node id docstring: 'a mistyped id is refused rather than taken for another node'."""
    nid = node_id_of(bytes(32))
    accepted = [t for t in single_substitutions(nid) if is_valid_node_id(t)]
    assert accepted == []


@QUICK
@given(st.text() | st.text(alphabet=B32 + "nN0189", min_size=34, max_size=36))
def test_node_id_validators_on_any_text(text: str) -> None:
    """is_valid_node_id answers a bool; validate_node_id returns the text or raises InvalidId."""
    ok = is_valid_node_id(text)
    assert isinstance(ok, bool)
    if ok:
        assert validate_node_id(text) == text
        assert len(text) == NODE_ID_LENGTH
    else:
        with pytest.raises(InvalidId, match="node id"):
            validate_node_id(text)


@QUICK
@given(st.text() | st.text(alphabet=HEX + "ABCDEF", min_size=63, max_size=65))
def test_id_validators_on_any_text(text: str) -> None:
    """is_valid_id answers a bool; validate_id returns the text or raises InvalidId."""
    ok = is_valid_id(text)
    assert isinstance(ok, bool)
    if ok:
        assert validate_id(text, "file id") == text
        assert len(text) == ID_LENGTH
    else:
        with pytest.raises(InvalidId, match="file id"):
            validate_id(text, "file id")


@QUICK
@given(st.none() | st.integers() | st.binary() | st.lists(st.integers()) | st.floats())
def test_id_validators_refuse_non_text(value: object) -> None:
    """Values that are not str are never ids."""
    assert not is_valid_id(value)
    assert not is_valid_node_id(value)
    with pytest.raises(InvalidId):
        validate_id(value)
    with pytest.raises(InvalidId):
        validate_node_id(value)


@QUICK
@given(path_like(hex_ids | node_ids | st.text(max_size=40)))
def test_path_like_strings_are_never_ids_or_names(text: str) -> None:
    """Text with ``../``, ``/``, ``\\`` or NUL is never an id, a node id or a file name."""
    assert not is_valid_id(text)
    assert not is_valid_node_id(text)
    with pytest.raises(InvalidId):
        validate_id(text)
    with pytest.raises(InvalidId):
        validate_node_id(text)
    with pytest.raises(InvalidName):
        validate_name(text)


@QUICK
@given(st.binary(max_size=4096))
def test_chunk_id_is_a_valid_id(data: bytes) -> None:
    """chunk_id of any bytes is a valid id: the SHA-256 hex."""
    cid = chunk_id(data)
    assert validate_id(cid) == cid == hashlib.sha256(data).hexdigest()


@QUICK
@given(st.text())
def test_validate_name_of_any_text(text: str) -> None:
    """validate_name returns the name unchanged or raises InvalidName."""
    try:
        name = validate_name(text)
    except InvalidName:
        return
    assert name == text
    assert name not in {".", ".."}
    assert not {"/", "\\", "\x00"} & set(name)
    assert 1 <= len(name.encode("utf-8")) <= 255


# --- sizes -----------------------------------------------------------------------------------

UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
spaces = st.sampled_from(["", " ", "  ", "\t", "\n", "\u00a0"])
size_like = st.builds(
    lambda a, num, b, unit, c: a + num + b + unit + c,
    spaces,
    st.from_regex(r"-?[0-9]{0,22}(\.[0-9]{0,6})?(e[0-9])?", fullmatch=True),
    spaces,
    st.sampled_from([*UNITS, "PiB", "KIB", "iB", "bytes", "x"]) | st.text(max_size=4),
    spaces,
)


@QUICK
@given(st.text() | size_like)
def test_parse_size_of_any_text(text: str) -> None:
    """Arbitrary text is a size in 0..MAX_SIZE or raises InvalidSize."""
    try:
        n = parse_size(text)
    except InvalidSize as exc:
        assert exc.code == "invalid-size"
        return
    assert type(n) is int
    assert 0 <= n <= MAX_SIZE


@QUICK
@given(
    st.integers(min_value=0, max_value=2**64),
    st.sampled_from(sorted(UNITS)),
    st.sampled_from(["", " "]),
    st.booleans(),
)
def test_parse_size_of_number_and_unit(n: int, unit: str, sep: str, upper: bool) -> None:
    """``N UNIT`` in any case is N times the unit, or InvalidSize above MAX_SIZE."""
    text = f"{n}{sep}{unit.upper() if upper else unit}"
    expected = n * UNITS[unit]
    if expected > MAX_SIZE:
        with pytest.raises(InvalidSize, match="out of range"):
            parse_size(text)
    else:
        assert parse_size(text) == expected


@QUICK
@given(
    st.integers(min_value=0, max_value=10**6),
    st.from_regex(r"[0-9]{1,8}", fullmatch=True).filter(lambda f: f.strip("0")),
)
def test_fraction_of_a_byte_is_refused(whole: int, frac: str) -> None:
    """A size with a non-zero fraction of a byte is refused (as '1.3B' is)."""
    with pytest.raises(InvalidSize, match="whole number"):
        parse_size(f"{whole}.{frac}B")


@QUICK
@given(st.integers(min_value=0, max_value=3), st.integers(min_value=2, max_value=2047))
def test_format_size_round_trip_where_exact(power: int, halves: int) -> None:
    """Sizes format_size prints exactly (whole or half units) parse back to the same bytes."""
    n = halves if power == 0 else halves * 1024**power // 2
    assume(power > 0 or n < 1024)
    assert parse_size(format_size(n)) == n


@QUICK
@given(st.integers(min_value=0, max_value=2**50 - 1))
def test_format_size_reads_back_close_or_refused(n: int) -> None:
    """What format_size prints (rounded to 0.1 unit) reads back within 0.05 unit or is refused.

    A rounded print such as '1.1 KiB' is 1126.4 bytes, which parse_size refuses as not whole.
    """
    text = format_size(n)
    unit = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}[text.split()[1]]
    try:
        back = parse_size(text)
    except InvalidSize as exc:
        assert "whole number" in exc.detail
        assert unit > 1
        return
    assert abs(back - n) <= unit * 0.05


@pytest.mark.parametrize(
    "text", ["1.00000000000000000000000000001B", "4611686018427387903.9999999999B"]
)
def test_long_fraction_of_a_byte_is_refused(text: str) -> None:
    """A fraction of a byte is refused however many digits it has."""
    with pytest.raises(InvalidSize):
        parse_size(text)


def test_format_size_of_a_pebibyte_reads_back() -> None:
    """format_size(2**50) == '1.0 PiB' reads back, as every size up to MAX_SIZE should."""
    assert parse_size(format_size(2**50)) == 2**50


# --- manifests -------------------------------------------------------------------------------

SAFE_CREATED = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.builds(
        timezone,
        st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
            lambda m: timedelta(minutes=m)
        ),
    ),
)
"""Creation times a manifest accepts, away from the ends of its range (1970 to 9999)."""
names = st.text(
    alphabet=st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="/\\"),
    min_size=1,
    max_size=60,
).filter(lambda s: s not in {".", ".."} and len(s.encode()) <= 255)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | hex_ids,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
MANIFEST_FIELDS = sorted(Manifest.model_fields)
REQUIRED_FIELDS = sorted(n for n, f in Manifest.model_fields.items() if f.is_required())


def random_bytes(seed: int, size: int) -> bytes:
    """Return ``size`` reproducible pseudo-random bytes (cheaper than drawing them)."""
    return random.Random(seed).randbytes(size)


@functools.cache
def a_manifest(size: int = 2 * MIN_CHUNK_SIZE + 5) -> Manifest:
    """Return a valid manifest of ``size`` random bytes."""
    return manifest_of_bytes(
        random_bytes(7, size), "a.bin", datetime(2030, 1, 1, tzinfo=UTC), MIN_CHUNK_SIZE
    )


def parse_or_invalid(data: str | bytes | dict[str, Any]) -> Manifest | None:
    """Parse ``data`` with both entry points; return the manifest or None when both refuse.

    Manifest.parse may raise only InvalidManifest, model_validate_json / model_validate only
    ValidationError, and the two must agree.
    """
    try:
        parsed: Manifest | None = Manifest.parse(data)
    except InvalidManifest as exc:
        assert exc.detail.startswith(("invalid manifest field", "manifest is larger"))
        parsed = None
    try:
        if isinstance(data, dict):
            direct: Manifest | None = Manifest.model_validate(data)
        else:
            direct = Manifest.model_validate_json(data)
    except ValidationError:
        direct = None
    assert parsed == direct
    if parsed is not None:
        assert Manifest.parse(parsed.canonical_json()) == parsed
    return parsed


@SLOW
@given(st.binary(max_size=600) | st.text(max_size=600).map(str.encode))
def test_manifest_parse_of_any_bytes(data: bytes) -> None:
    """Arbitrary bytes give a manifest or InvalidManifest / ValidationError, nothing else."""
    parse_or_invalid(data)


@SLOW
@given(
    st.sampled_from(MANIFEST_FIELDS),
    json_values | SAFE_CREATED.map(datetime.isoformat) | st.text(alphabet=B64URL, max_size=40),
    st.data(),
)
def test_manifest_with_one_field_fuzzed(field: str, value: object, data: st.DataObject) -> None:
    """A valid manifest with one field replaced, dropped, or an extra field parses or is refused."""
    doc = json.loads(a_manifest().canonical_json())
    how = data.draw(st.sampled_from(["replace", "drop", "extra"]))
    if how == "replace":
        doc[field] = value
    elif how == "drop":
        doc.pop(field, None)
    else:
        doc[field + "_x"] = value
    m = parse_or_invalid(doc)
    parse_or_invalid(json.dumps(doc))
    if how == "extra" or (how == "drop" and field in REQUIRED_FIELDS):
        assert m is None
    if m is not None:
        original = a_manifest()
        for other in MANIFEST_FIELDS:
            if other != field:
                assert getattr(m, other) == getattr(original, other)


@SLOW
@given(
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=0, max_value=3 * MIN_CHUNK_SIZE + 1),
    names,
    SAFE_CREATED,
    st.none() | st.text(alphabet=B64URL, min_size=1, max_size=80),
)
def test_manifest_round_trip_of_random_bytes(
    seed: int, size: int, name: str, created: datetime, sealed: str | None
) -> None:
    """The manifest of random bytes (sealed or not) survives canonical JSON and a dict."""
    data = random_bytes(seed, size)
    m = manifest_of_bytes(data, name, created, MIN_CHUNK_SIZE)
    if sealed is not None:
        m = Manifest.parse(m.model_dump() | {"sealed": sealed})
        assert m.sealed == sealed
    assert m.size == size
    assert m.name == name
    assert m.sha256 == hashlib.sha256(data).hexdigest()
    assert len(m.chunk_ids) == chunk_count(size, MIN_CHUNK_SIZE)
    assert m.file_id == merkle_root(m.chunk_ids)
    assert m.created == created.astimezone(UTC).replace(microsecond=0)
    raw = m.canonical_json()
    assert Manifest.parse(raw) == m
    assert Manifest.parse(raw.decode()) == m
    assert Manifest.parse(m.model_dump()) == m
    assert Manifest.parse(raw).canonical_json() == raw
    m.verify()


@SLOW
@given(st.integers(min_value=1, max_value=3 * MIN_CHUNK_SIZE), st.data())
def test_changed_chunk_id_fails_verify(size: int, data: st.DataObject) -> None:
    """Replacing any chunk id with another valid id parses, but verify() refuses it."""
    m = manifest_of_bytes(
        random_bytes(size, size), "f", datetime(2030, 1, 1, tzinfo=UTC), MIN_CHUNK_SIZE
    )
    at = data.draw(st.integers(min_value=0, max_value=len(m.chunk_ids) - 1))
    other = data.draw(hex_ids.filter(lambda c: c != m.chunk_ids[at]))
    ids = list(m.chunk_ids)
    ids[at] = other
    forged = Manifest.parse(json.loads(m.canonical_json()) | {"chunk_ids": ids})
    with pytest.raises(InvalidManifest, match="does not match"):
        forged.verify()


@QUICK
@given(json_values)
def test_manifest_parse_of_non_objects(value: object) -> None:
    """JSON that is not an object (or an object of the wrong fields) is InvalidManifest."""
    with pytest.raises(InvalidManifest):
        Manifest.parse(json.dumps(value))
    if not isinstance(value, str):
        with pytest.raises(InvalidManifest):
            Manifest.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("created", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_created_at_the_end_of_the_datetime_range_is_refused(created: str) -> None:
    """A creation time that cannot be moved to UTC is an InvalidManifest, not a crash."""
    doc = json.loads(a_manifest().canonical_json()) | {"created": created}
    with pytest.raises(InvalidManifest, match="created"):
        Manifest.parse(doc)


@pytest.mark.parametrize("created", ["0999-01-01T00:00:00Z", "1969-12-31T23:59:59Z"])
def test_a_creation_time_before_1970_is_refused(created: str) -> None:
    """Early years were once accepted and written back with fewer than 4 year digits, which
    did not parse: the tracker stored such a manifest and then answered 500 for the file."""
    doc = json.loads(a_manifest().canonical_json()) | {"created": created}
    with pytest.raises(InvalidManifest, match="1970"):
        Manifest.parse(doc)


# --- identity keys ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """One identity for the module (making a key and certificate costs a few ms)."""
    return load_or_create_identity(tmp_path_factory.mktemp("identity"))


@pytest.fixture(scope="module")
def other_identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """A second identity, to swap keys between signers."""
    return load_or_create_identity(tmp_path_factory.mktemp("other"))


def test_identity_reloads_the_same_and_is_consistent(identity: Identity) -> None:
    """A reload gives the same key, node id and fingerprint; the key file is 0600."""
    again = load_or_create_identity(identity.key_path.parent)
    assert again.node_id == identity.node_id
    assert again.public_key == identity.public_key
    assert again.fingerprint == identity.fingerprint
    assert identity.node_id == node_id_of(identity.public_key)
    assert identity.public_key == public_bytes(identity.private_key)
    assert is_valid_id(identity.fingerprint)
    cert_pem = identity.cert_path.read_bytes()
    cert_der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    assert fingerprint_of(cert_der) == identity.fingerprint
    assert identity.key_path.stat().st_mode & 0o777 == 0o600


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose key file the tests overwrite."""
    return tmp_path_factory.mktemp("keyfile")


def write_key(key_dir: Path, pem: bytes, mode: int = 0o600) -> None:
    """Write ``pem`` as the identity key of ``key_dir`` with ``mode``."""
    path = key_dir / KEY_FILE
    path.write_bytes(pem)
    os.chmod(path, mode)


PEM_HEAD = b"-----BEGIN PRIVATE KEY-----\n"
PEM_TAIL = b"\n-----END PRIVATE KEY-----\n"


@SLOW
@given(
    st.binary(max_size=300)
    | st.binary(max_size=120).map(lambda b: PEM_HEAD + base64.b64encode(b) + PEM_TAIL)
)
def test_garbage_key_file_is_config_error(key_dir: Path, pem: bytes) -> None:
    """A key file that is not an Ed25519 PEM key is a ConfigError, nothing else."""
    write_key(key_dir, pem)
    with pytest.raises(ConfigError, match=r"identity\.key"):
        load_or_create_identity(key_dir)


def test_key_file_of_another_key_type_is_refused(key_dir: Path) -> None:
    """A well-formed PEM private key that is not Ed25519 (here X25519) is a ConfigError."""
    pem = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_key(key_dir, pem)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_or_create_identity(key_dir)


def test_key_file_readable_by_others_is_refused(key_dir: Path) -> None:
    """A key file with group or other bits set is refused before it is read."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_key(key_dir, pem, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_identity(key_dir)


def test_encrypted_key_file_is_config_error(key_dir: Path) -> None:
    """A key file under a passphrase is a ConfigError naming the file, not a traceback."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    write_key(key_dir, pem)
    with pytest.raises(ConfigError, match=r"identity\.key"):
        load_or_create_identity(key_dir)


# --- signed request headers ------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """Return ``data`` as unpadded base64url, as the signature header writes it."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


FIELD_VALUES: dict[str, st.SearchStrategy[str]] = {
    "node": node_ids | st.from_regex(r"n[a-z2-7]{34}", fullmatch=True),
    "key": keys32.map(encode_key) | st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True),
    "time": st.integers(min_value=0, max_value=10**15 - 1).map(str),
    "nonce": st.binary(min_size=16, max_size=16).map(bytes.hex),
    "sig": st.binary(min_size=64, max_size=64).map(b64url)
    | st.from_regex(r"[A-Za-z0-9_-]{86}", fullmatch=True),
}
header_parts = st.one_of(
    st.sampled_from(sorted(FIELD_VALUES)).flatmap(
        lambda name: FIELD_VALUES[name].map(lambda v: f"{name}={v}")
    ),
    st.builds(
        lambda n, v: f"{n}={v}",
        st.sampled_from([*FIELD_VALUES, "Node", "x", ""]),
        st.text(max_size=20),
    ),
    st.text(max_size=30),
)
header_like = st.builds(
    lambda scheme, sep, parts, joiner: scheme + sep + joiner.join(parts),
    st.sampled_from([SIG_SCHEME, SIG_SCHEME.lower(), "Bearer", ""]),
    st.sampled_from([" ", "  ", "", "\t"]),
    st.lists(header_parts, max_size=7),
    st.sampled_from([",", ", ", ";"]),
)


@QUICK
@given(st.none() | st.text() | header_like)
def test_parse_header_of_any_text(value: str | None) -> None:
    """Any header value parses to a SignedHeader that renders back, or raises Unauthenticated."""
    try:
        header = parse_header(value)
    except Unauthenticated as exc:
        assert exc.status == 401
        return
    assert isinstance(header, SignedHeader)
    assert len(header.public_key) == 32
    assert len(header.signature) == 64
    assert parse_header(header.render()) == header
    assert len(value or "") <= MAX_HEADER_CHARS


@QUICK
@given(
    node_ids,
    keys32,
    st.integers(min_value=0, max_value=10**15 - 1),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=64, max_size=64),
    st.permutations(range(5)),
)
def test_header_render_parse_round_trip(
    node: str, key: bytes, time_ms: int, nonce: bytes, sig: bytes, order: list[int]
) -> None:
    """render() -> parse_header() is the identity, whatever the order of the fields."""
    header = SignedHeader(node, key, time_ms, nonce.hex(), sig)
    assert parse_header(header.render()) == header
    parts = header.render().split(" ", 1)[1].split(",")
    assert parse_header(SIG_SCHEME + " " + ",".join(parts[i] for i in order)) == header


methods = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"])
targets = st.text(alphabet=string.ascii_letters + string.digits + "/?=&%-_.~", max_size=60).map(
    lambda s: "/" + s
)
body_hashes = st.binary(max_size=64).map(lambda b: hashlib.sha256(b).hexdigest())
clock = st.floats(min_value=1_000_000_000, max_value=4_000_000_000)


SMALL_ORDER_KEYS = sorted(WEAK_KEYS)
"""The encodings of the 8 Ed25519 points of small order (refused as keys by verify)."""


@QUICK
@given(
    keys32,
    st.binary(min_size=64, max_size=64),
    st.binary(min_size=16, max_size=16),
)
def test_verify_of_any_key_and_signature_is_unauthenticated(
    key: bytes, sig: bytes, nonce: bytes
) -> None:
    """A header with any 32-byte key (its own node id) and any signature is refused, cleanly.

    The key bytes need not be a point on the curve: that must still be Unauthenticated.
    """
    now = 1_800_000_000.0
    value = SignedHeader(node_id_of(key), key, int(now * 1000), nonce.hex(), sig).render()
    with pytest.raises(Unauthenticated):
        verify(value, "POST", "/v1/files", hashlib.sha256(b"").hexdigest(), now=now)


@given(methods, st.text(max_size=40).map(lambda s: "/" + s), st.binary(max_size=64))
@settings(max_examples=10, deadline=None)
def test_small_order_key_cannot_sign_without_a_private_key(
    method: str, target: str, body: bytes
) -> None:
    """A signature made with no private key (R = identity, S = 0) is refused."""
    key = bytes.fromhex("01" + "00" * 31)  # the identity point: no private key needed
    now = 1_800_000_000.0
    forged = SignedHeader(node_id_of(key), key, int(now * 1000), "ab" * 16, key + bytes(32))
    with pytest.raises(Unauthenticated):
        verify(forged.render(), method, target, hashlib.sha256(body).hexdigest(), now=now)


@SLOW
@given(methods, targets, body_hashes, clock, st.floats(min_value=-59.0, max_value=59.0))
def test_signed_request_verifies(
    identity: Identity, method: str, target: str, sha: str, now: float, skew: float
) -> None:
    """sign_request's header verifies for the same request, within the window either way."""
    headers = sign_request(identity, method, target, sha, now=now)
    assert list(headers) == [HEADER]
    checked = verify(headers[HEADER], method.lower(), target, sha, now=now + skew)
    assert checked.node_id == identity.node_id
    assert checked.public_key == identity.public_key
    assert checked.time_ms == int(now * 1000)


def tampered(
    identity: Identity, other: Identity, what: str, draw: Callable[..., Any]
) -> tuple[str, tuple[str, str, str], float]:
    """Return a header, the request it is checked against, and the clock, with ``what`` changed."""
    method, target, sha, now = draw(methods), draw(targets), draw(body_hashes), draw(clock)
    value = sign_request(identity, method, target, sha, now=now)[HEADER]
    header = parse_header(value)
    if what == "method":
        method = draw(methods.filter(lambda m: m != method))
    elif what == "target":
        target = draw(targets.filter(lambda t: t != target))
    elif what == "body":
        sha = draw(body_hashes.filter(lambda s: s != sha))
    elif what == "late":
        now += draw(st.floats(min_value=WINDOW_SECONDS + 0.01, max_value=10**6))
    elif what == "early":
        now -= draw(st.floats(min_value=WINDOW_SECONDS + 0.01, max_value=10**6))
    elif what == "time":
        delta = draw(st.integers(min_value=-5000, max_value=5000).filter(bool))
        value = replace(header, time_ms=header.time_ms + delta).render()
    elif what == "nonce":
        nonce = draw(st.binary(min_size=16, max_size=16).map(bytes.hex))
        assume(nonce != header.nonce)
        value = replace(header, nonce=nonce).render()
    elif what == "signature":
        bit = draw(st.integers(min_value=0, max_value=511))
        sig = bytearray(header.signature)
        sig[bit // 8] ^= 1 << (bit % 8)
        value = replace(header, signature=bytes(sig)).render()
    elif what == "signer":
        value = replace(header, node_id=other.node_id, public_key=other.public_key).render()
    elif what == "node":
        value = replace(header, node_id=other.node_id).render()
    return value, (method, target, sha), now


TAMPERINGS = [
    "method",
    "target",
    "body",
    "late",
    "early",
    "time",
    "nonce",
    "signature",
    "signer",
    "node",
]


@SLOW
@given(st.sampled_from(TAMPERINGS), st.data())
def test_any_change_to_a_signed_request_is_unauthenticated(
    identity: Identity, other_identity: Identity, what: str, data: st.DataObject
) -> None:
    """Changing the method, target, body, time, nonce, signature or signer is refused."""
    value, (method, target, sha), now = tampered(identity, other_identity, what, data.draw)
    with pytest.raises(Unauthenticated):
        verify(value, method, target, sha, now=now)


@QUICK
@given(methods, targets, body_hashes, targets, body_hashes)
def test_canonical_separates_fields(
    method: str, target: str, sha: str, other_target: str, other_sha: str
) -> None:
    """Different targets or body hashes give different signed bytes."""
    base = canonical(method, target, 1, "0" * 32, sha, "n" + "a" * 34)
    if other_target != target:
        assert canonical(method, other_target, 1, "0" * 32, sha, "n" + "a" * 34) != base
    if other_sha != sha:
        assert canonical(method, target, 1, "0" * 32, other_sha, "n" + "a" * 34) != base


@SLOW
@given(
    methods,
    targets,
    body_hashes,
    clock,
    st.floats(min_value=0, max_value=2 * WINDOW_SECONDS - 0.001),
)
def test_replay_guard_refuses_the_same_header_twice(
    identity: Identity, method: str, target: str, sha: str, now: float, later: float
) -> None:
    """The same signed header is accepted once; a new signature of the request is not a replay."""
    guard = ReplayGuard()
    value = sign_request(identity, method, target, sha, now=now)[HEADER]
    header = verify(value, method, target, sha, now=now)
    guard.check(header, now=now)
    with pytest.raises(Unauthenticated, match="replay"):
        guard.check(parse_header(value), now=now + later)
    fresh = verify(
        sign_request(identity, method, target, sha, now=now)[HEADER], method, target, sha, now=now
    )
    guard.check(fresh, now=now + later)
    assert len(guard) == 2


@QUICK
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=4), st.floats(min_value=0, max_value=70)),
        max_size=40,
    )
)
def test_replay_guard_matches_a_model(events: list[tuple[int, float]]) -> None:
    """Over a run of checks, a (node, nonce) is refused exactly while it is remembered."""
    window = 30.0
    guard = ReplayGuard(window=window)
    remembered: dict[int, float] = {}
    now = 1_000.0
    for nonce, step in events:
        now += step
        header = SignedHeader(
            "n" + "a" * 34, bytes(32), int(now * 1000), f"{nonce:032x}", bytes(64)
        )
        remembered = {k: t for k, t in remembered.items() if t > now}
        if nonce in remembered:
            with pytest.raises(Unauthenticated):
                guard.check(header, now=now)
        else:
            guard.check(header, now=now)
            remembered[nonce] = now + 2 * window
        assert len(guard) == len(remembered)


# --- sealed manifest parts -------------------------------------------------------------------


def seal_raw(key: bytes, plain: bytes) -> str:
    """Return ``plain`` sealed as seal() does, but without seal()'s JSON encoding.

    A sharer picks the key in the link and may seal any bytes: this is what such a sharer can
    hand to unseal(). It uses the module's (private) nonce and associated data.
    """
    box = AESGCM(key).encrypt(sealing._SEAL_NONCE, plain, sealing._SEAL_AAD)
    return base64.urlsafe_b64encode(box).decode("ascii").rstrip("=")


def check_unseal(key: bytes, text: str) -> sealing.SealedPart | None:
    """Unseal ``text``; None on InvalidInput or IntegrityError, anything else raises."""
    try:
        part = sealing.unseal(key, text)
    except (InvalidInput, IntegrityError):
        return None
    assert isinstance(part.name, str)
    assert validate_name(part.name) == part.name
    assert is_valid_id(part.sha256)
    assert type(part.size) is int
    assert part.size >= 0
    return part


@SLOW
@given(keys32, names, st.integers(min_value=0, max_value=2**62), hex_ids)
def test_seal_unseal_round_trip(key: bytes, name: str, size: int, sha: str) -> None:
    """unseal(key, seal(key, part)) == part; another key cannot open it."""
    part = sealing.SealedPart(name, size, sha)
    text = sealing.seal(key, part)
    assert set(text) <= set(B64URL)
    assert sealing.unseal(key, text) == part
    other = bytes([key[0] ^ 1]) + key[1:]
    with pytest.raises(IntegrityError):
        sealing.unseal(other, text)


@SLOW
@given(keys32, st.text(max_size=80) | st.text(alphabet=B64URL, max_size=120))
def test_unseal_of_any_text(key: bytes, text: str) -> None:
    """Arbitrary sealed text is refused with InvalidInput or IntegrityError."""
    assert check_unseal(key, text) is None


@SLOW
@given(
    keys32,
    json_values
    | st.fixed_dictionaries(
        {
            "name": json_values | names,
            "size": json_values,
            "sha256": json_values | hex_ids,
        }
    ),
)
def test_unseal_of_any_sealed_json(key: bytes, doc: object) -> None:
    """Whatever JSON a sharer seals, unseal returns a well-typed part or InvalidInput."""
    check_unseal(key, seal_raw(key, json.dumps(doc).encode()))


@SLOW
@given(keys32, st.binary(max_size=200))
def test_unseal_of_any_sealed_bytes(key: bytes, plain: bytes) -> None:
    """Sealed bytes that are not JSON (or not UTF-8) are InvalidInput."""
    check_unseal(key, seal_raw(key, plain))


def test_unseal_of_deeply_nested_json_is_invalid_input() -> None:
    """A deeply nested sealed document is InvalidInput, not a crash."""
    key = bytes(range(32))
    text = seal_raw(key, b"[" * 1200)
    assert len(text) <= sealing.MAX_SEALED_CHARS
    with pytest.raises(InvalidInput):
        sealing.unseal(key, text)


def test_unseal_refuses_a_boolean_size() -> None:
    """A sealed size of ``true`` is not a byte count."""
    key = bytes(range(32))
    text = seal_raw(key, json.dumps({"name": "a", "size": True, "sha256": "a" * 64}).encode())
    assert check_unseal(key, text) is None
