"""The binary Merkle tree over a file's ordered chunk ids, and single-chunk proofs.

Construction (the Merkle Tree Hash of RFC 6962 §2.1 / RFC 9162 §2.1.1, with SHA-256), over the
chunk ids ``d[0..n-1]`` taken as their 32 raw bytes::

    MTH([])        = SHA-256(b"")                               (the empty file)
    MTH([d0])      = SHA-256(0x00 || d0)                        (a leaf)
    MTH(d[0..n-1]) = SHA-256(0x01 || MTH(d[0..k-1]) || MTH(d[k..n-1]))
                     where k is the largest power of two smaller than n

The 0x00 / 0x01 prefixes keep leaves and inner nodes apart, so no inner node can pass for a
leaf. Built level by level, an odd node at the end of a level is promoted unchanged to the next
level (never paired with a copy of itself, which would let two chunk lists share a root). The
file id is the hex of ``MTH``.

A proof that chunk ``i`` of ``n`` belongs to a root is the RFC 6962 audit path: the sibling
hashes from the leaf up, verified with the algorithm of RFC 9162 §2.1.3.2. The root does not
commit to the number of chunks on its own, so a verifier takes ``count`` from the manifest it
trusts, never from the prover.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from p2pshare.core.errors import InvalidId
from p2pshare.core.ids import validate_id

_LEAF = b"\x00"
_NODE = b"\x01"


def _leaf(chunk_id: str) -> bytes:
    return hashlib.sha256(_LEAF + bytes.fromhex(chunk_id)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def merkle_root(chunk_ids: list[str]) -> str:
    """Return the file id (hex Merkle root) of the ordered ``chunk_ids``.

    Raises :class:`~p2pshare.core.errors.InvalidId` if an id is malformed.
    """
    if not chunk_ids:
        return hashlib.sha256(b"").hexdigest()
    level = [_leaf(validate_id(c, "chunk id")) for c in chunk_ids]
    while len(level) > 1:
        paired = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0].hex()


class MerkleProof(BaseModel):
    """Proof that the chunk at ``index`` is one of the ``count`` chunks under a root.

    ``path`` holds the sibling hashes (hex) from the leaf's level up to the root's children.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0, description="position of the chunk in the file")
    count: int = Field(ge=1, description="number of chunks in the file")
    path: list[str] = Field(max_length=64, description="sibling hashes, leaf level first")


def _subtree(leaves: list[bytes]) -> bytes:
    level = leaves
    while len(level) > 1:
        paired = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def merkle_proof(chunk_ids: list[str], index: int) -> MerkleProof:
    """Return the proof that ``chunk_ids[index]`` belongs to ``merkle_root(chunk_ids)``.

    Raises :class:`IndexError` for an index out of range and
    :class:`~p2pshare.core.errors.InvalidId` for a malformed id.
    """
    if not 0 <= index < len(chunk_ids):
        raise IndexError(f"chunk index {index} out of range for {len(chunk_ids)} chunks")
    leaves = [_leaf(validate_id(c, "chunk id")) for c in chunk_ids]
    path: list[bytes] = []
    lo, hi, m = 0, len(leaves), index
    # RFC 6962 PATH(m, D[lo:hi]), unrolled from the root down, then reversed.
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if m - lo < k:
            path.append(_subtree(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(_subtree(leaves[lo : lo + k]))
            lo = lo + k
    path.reverse()
    return MerkleProof(index=index, count=len(chunk_ids), path=[p.hex() for p in path])


def verify_proof(chunk_id: str, proof: MerkleProof, root: str) -> bool:
    """Return True when ``proof`` shows ``chunk_id`` at ``proof.index`` under ``root``.

    Malformed ids or hashes make it return False, never raise.
    """
    try:
        validate_id(chunk_id)
        validate_id(root)
        siblings = [bytes.fromhex(validate_id(p)) for p in proof.path]
    except InvalidId:
        return False
    if proof.index >= proof.count:
        return False
    fn, sn = proof.index, proof.count - 1
    r = _leaf(chunk_id)
    for p in siblings:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r.hex() == root
