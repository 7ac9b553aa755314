"""The Merkle tree: fixed vectors, an independent reference, and proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.errors import InvalidId
from p2pshare.core.merkle import MerkleProof, merkle_proof, merkle_root, verify_proof


def ids(n: int) -> list[str]:
    """The fixed test leaves: chunk id i is SHA-256 of the decimal text of i."""
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reference_root(leaves: list[str]) -> str:
    """RFC 6962 MTH written recursively (split at the largest power of two below n)."""

    def mth(d: list[bytes]) -> bytes:
        if len(d) == 1:
            return sha(b"\x00" + d[0])
        k = 1 << ((len(d) - 1).bit_length() - 1)
        return sha(b"\x01" + mth(d[:k]) + mth(d[k:]))

    if not leaves:
        return sha(b"").hex()
    return mth([bytes.fromhex(x) for x in leaves]).hex()


VECTORS = {
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "13a77175e35eb1d9da91ee14df0d7772cea71289800206e2b45c882ecb06efbf",
    2: "bbb441530bdded54e6e2bfcdc829819ff39b30768eb9f023071dffc16b410f10",
    3: "8be871f13785b4c81a1700459c76ac2b3ae2caebb7876c376e223c6adff98c47",
    1000: "3b93b70ed68de7847cfafb398f3df0cf232fe05dfb117f8a8cf9dc31990ddb3b",
}


@pytest.mark.parametrize("n", sorted(VECTORS))
def test_fixed_vectors(n: int) -> None:
    assert merkle_root(ids(n)) == VECTORS[n]
    assert reference_root(ids(n)) == VECTORS[n]


def test_small_trees_by_hand() -> None:
    a, b, c = (bytes.fromhex(x) for x in ids(3))
    la, lb, lc = sha(b"\x00" + a), sha(b"\x00" + b), sha(b"\x00" + c)
    assert merkle_root(ids(1)) == la.hex()
    assert merkle_root(ids(2)) == sha(b"\x01" + la + lb).hex()
    # the odd third leaf is promoted, not paired with a copy of itself
    assert merkle_root(ids(3)) == sha(b"\x01" + sha(b"\x01" + la + lb) + lc).hex()


def test_duplicated_last_leaf_gives_another_root() -> None:
    three = ids(3)
    assert merkle_root(three) != merkle_root([*three, three[-1]])


def test_order_matters() -> None:
    two = ids(2)
    assert merkle_root(two) != merkle_root(list(reversed(two)))


@given(st.integers(min_value=0, max_value=70))
def test_matches_reference(n: int) -> None:
    assert merkle_root(ids(n)) == reference_root(ids(n))


def test_bad_id_refused() -> None:
    with pytest.raises(InvalidId):
        merkle_root(["ABC"])
    with pytest.raises(InvalidId):
        merkle_root([ids(1)[0].upper()])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 33, 1000])
def test_every_proof_round_trips(n: int) -> None:
    leaves = ids(n)
    root = merkle_root(leaves)
    for i in range(n) if n < 100 else (0, 1, 511, 512, 998, 999):
        proof = merkle_proof(leaves, i)
        assert verify_proof(leaves[i], proof, root), (n, i)
        assert len(proof.path) <= max(1, (n - 1).bit_length())


def test_tampered_proofs_rejected() -> None:
    leaves = ids(9)
    root = merkle_root(leaves)
    proof = merkle_proof(leaves, 4)
    assert verify_proof(leaves[4], proof, root)
    # another chunk at that index
    assert not verify_proof(leaves[5], proof, root)
    # another index
    assert not verify_proof(leaves[4], proof.model_copy(update={"index": 5}), root)
    # a count that changes the path's shape (the count itself is not in the root: a verifier
    # takes it from the manifest)
    assert not verify_proof(leaves[4], proof.model_copy(update={"count": 5}), root)
    # a flipped bit in a sibling
    bad = list(proof.path)
    bad[0] = f"{int(bad[0][0], 16) ^ 1:x}" + bad[0][1:]
    assert not verify_proof(leaves[4], proof.model_copy(update={"path": bad}), root)
    # a shortened or lengthened path
    assert not verify_proof(leaves[4], proof.model_copy(update={"path": proof.path[:-1]}), root)
    longer = [*proof.path, proof.path[0]]
    assert not verify_proof(leaves[4], proof.model_copy(update={"path": longer}), root)
    # another root
    assert not verify_proof(leaves[4], proof, merkle_root(leaves[:8]))
    # malformed input is a False, not an exception
    assert not verify_proof("zz", proof, root)
    assert not verify_proof(leaves[4], proof.model_copy(update={"path": ["xyz"]}), root)
    assert not verify_proof(leaves[4], MerkleProof(index=9, count=9, path=proof.path), root)


def test_proof_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        merkle_proof(ids(3), 3)
    with pytest.raises(IndexError):
        merkle_proof([], 0)
