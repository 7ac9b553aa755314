"""The audit proof."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.audit import ProofHasher, new_nonce, proof
from p2pshare.core.ids import chunk_id


def test_the_proof_is_hmac_sha256_keyed_by_the_nonce() -> None:
    nonce = "00" * 31 + "01"
    expected = hmac.new(bytes(31) + b"\x01", b"chunk bytes", hashlib.sha256).hexdigest()
    assert proof(nonce, b"chunk bytes") == expected


def test_nonces_are_fresh_hex() -> None:
    a, b = new_nonce(), new_nonce()
    assert a != b
    assert len(a) == 64 and int(a, 16) >= 0


@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=5))
def test_piecewise_equals_whole_and_checks_the_chunk_id(data: bytes, cuts: list[int]) -> None:
    nonce = new_nonce()
    h = ProofHasher(nonce)
    start = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        h.update(data[start:cut])
        start = cut
    h.update(data[start:])
    assert h.answer() == proof(nonce, data)
    assert h.chunk_id() == chunk_id(data)


def test_another_nonce_or_one_flipped_byte_changes_the_answer() -> None:
    nonce = new_nonce()
    data = bytes(range(256)) * 4
    flipped = bytearray(data)
    flipped[100] ^= 1
    assert proof(nonce, data) != proof(nonce, flipped)
    assert proof(nonce, data) != proof(new_nonce(), data)
