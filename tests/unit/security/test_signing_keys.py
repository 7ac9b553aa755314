"""verify's cache of loaded public keys: a key is hashed and loaded once, and every check
still applies to every request (the node id, weak keys, the signature)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.errors import Unauthenticated
from p2pshare.core.ids import node_id_of
from p2pshare.security import signing
from p2pshare.security.keys import KeyPair
from p2pshare.security.signing import SignedHeader, body_sha256, sign_request, verify

NOW = 1_800_000_000.0
TARGET = "/v1/nodes/announce"
SHA = body_sha256(b"{}")


def pair(label: str) -> KeyPair:
    seed = hashlib.sha256(label.encode()).digest()
    return KeyPair.of(Ed25519PrivateKey.from_private_bytes(seed))


def header(key: KeyPair) -> str:
    return sign_request(key, "POST", TARGET, SHA, now=NOW)[signing.HEADER]


def test_a_key_is_loaded_once_for_many_requests() -> None:
    key = pair("cached")
    signing._public_key.cache_clear()
    for _ in range(3):
        assert verify(header(key), "POST", TARGET, SHA, now=NOW).node_id == key.node_id
    info = signing._public_key.cache_info()
    assert (info.misses, info.hits, info.maxsize) == (1, 2, signing.KEY_CACHE_SIZE)


def test_a_cached_key_is_still_refused_for_another_node_or_a_bad_signature() -> None:
    a, b = pair("a"), pair("b")
    assert verify(header(a), "POST", TARGET, SHA, now=NOW).node_id == a.node_id  # now cached
    checked = signing.parse_header(header(a))
    as_b = SignedHeader(b.node_id, a.public_key, checked.time_ms, checked.nonce, checked.signature)
    with pytest.raises(Unauthenticated, match="is not node"):
        verify(as_b.render(), "POST", TARGET, SHA, now=NOW)
    with pytest.raises(Unauthenticated, match="does not match"):
        verify(header(a), "POST", TARGET + "?x", SHA, now=NOW)
    with pytest.raises(Unauthenticated, match="does not match"):
        verify(header(a), "POST", TARGET, body_sha256(b"{ }"), now=NOW)


def test_a_weak_key_is_refused_every_time_cached_or_not() -> None:
    key = bytes.fromhex("01" + "00" * 31)  # the identity point: no private key needed
    forged = SignedHeader(node_id_of(key), key, int(NOW * 1000), "ab" * 16, key + bytes(32))
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="weak"):
            verify(forged.render(), "POST", TARGET, SHA, now=NOW)


@settings(max_examples=60, deadline=None)
@given(label=st.text(max_size=8), bit=st.integers(0, 64 * 8 - 1))
def test_the_checker_accepts_what_the_signer_makes_and_no_bit_flipped_signature(
    label: str, bit: int
) -> None:
    # keys and signatures come from cryptography (OpenSSL), checks from PyNaCl (libsodium)
    key = pair(label)
    good = signing.parse_header(header(key))
    assert verify(good.render(), "POST", TARGET, SHA, now=NOW).nonce == good.nonce
    sig = bytearray(good.signature)
    sig[bit // 8] ^= 1 << (bit % 8)
    bad = SignedHeader(good.node_id, good.public_key, good.time_ms, good.nonce, bytes(sig))
    with pytest.raises(Unauthenticated, match="does not match"):
        verify(bad.render(), "POST", TARGET, SHA, now=NOW)
