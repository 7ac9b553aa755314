"""The pure helpers of bench/anchors.py (bencoding, info hash, /proc/net/tcp, sizes)."""

from __future__ import annotations

import hashlib

import pytest

from tests.unit.bench.loader import load_bench

anchors = load_bench("anchors")

INFO = (
    b"d6:lengthi1073741824e4:name6:a.file12:piece lengthi4194304e6:pieces20:"
    + b"x" * 20
    + b"7:privatei1ee"
)
TORRENT = (
    b"d8:announce30:http://127.0.0.1:6969/announce7:comment3:abc4:info" + INFO + b"4:zzzzli1ei-2eee"
)


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"i42e", 4),
        (b"i-7eXX", 4),
        (b"4:spamXX", 6),
        (b"0:", 2),
        (b"le", 2),
        (b"l4:spami1eeX", 11),
        (b"d3:cow3:moo4:spaml1:aee", 23),
    ],
)
def test_bencode_span_finds_the_end_of_a_value(data: bytes, end: int) -> None:
    assert anchors.bencode_span(data, 0) == end


@pytest.mark.parametrize("data", [b"", b"x", b"ie", b"i4", b"5:abc", b"l4:spam", b"d1:a", b"a:b"])
def test_bencode_span_refuses_malformed_input(data: bytes) -> None:
    with pytest.raises(ValueError, match="malformed bencoding"):
        anchors.bencode_span(data, 0)


def test_info_hash_is_the_sha1_of_the_info_dictionary_as_written() -> None:
    assert anchors.info_hash(TORRENT) == hashlib.sha1(INFO).hexdigest()


@pytest.mark.parametrize(
    "data", [b"", b"i1e", b"d8:announce3:urle", b"d4:info", b"d8:announce3:url"]
)
def test_info_hash_refuses_what_is_not_a_torrent(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a torrent|malformed"):
        anchors.info_hash(data)


def test_bench_info_hashes_are_stable_distinct_hex() -> None:
    hashes = anchors.bench_info_hashes(50)
    assert hashes[0] == hashlib.sha1(b"p2pshare-bench-0").hexdigest()
    assert len(set(hashes)) == 50
    assert all(len(h) == 40 and int(h, 16) >= 0 for h in hashes)
    assert anchors.bench_info_hashes(3) == hashes[:3]


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1B39 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534 0 1 1 0
   1: 0100007F:1AE1 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0 0 2 1 0
"""


def test_tcp_listening_reads_proc_net_tcp() -> None:
    assert anchors.tcp_listening(PROC_NET_TCP, 6969)
    assert not anchors.tcp_listening(PROC_NET_TCP, 6881)  # established, not listening
    assert not anchors.tcp_listening(PROC_NET_TCP, 6969, "127.0.0.2")
    assert not anchors.tcp_listening("", 6969)


def test_piece_exponent() -> None:
    assert anchors.piece_exponent(4 * 1024 * 1024) == 22
    assert anchors.piece_exponent(32 * 1024) == 15
    for bad in (0, -4, 3 * 1024 * 1024, 16 * 1024, 512 * 1024 * 1024):
        with pytest.raises(ValueError, match="power of two"):
            anchors.piece_exponent(bad)


def test_mb_per_s_is_decimal() -> None:
    assert anchors.mb_per_s(500_000_000, 2.0) == 250.0
    assert anchors.mb_per_s(1, 0.0) == float("inf")
