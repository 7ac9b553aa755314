"""The signature checker's pipe protocol (``security/checker.py``), on plain bytes, and the
process itself."""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2pshare.security.checker import MAX_BATCH, MAX_MESSAGE, frame, serve

KEYS = [SigningKey(hashlib.sha256(f"checker-{i}".encode()).digest()) for i in range(3)]
PROCESS_TIMEOUT = 30.0


def item(k: int, message: bytes, *, tamper: bool = False) -> tuple[bytes, bytes, bytes]:
    """Return (key, signature, message) signed by key ``k``; with ``tamper`` the message
    checked is not the one signed."""
    signature = KEYS[k].sign(message).signature
    checked = message + b"!" if tamper else message
    return bytes(KEYS[k].verify_key), signature, checked


def answers(data: bytes) -> bytes:
    out = io.BytesIO()
    serve(io.BytesIO(data), out)
    return out.getvalue()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=300), st.booleans()), max_size=12),
        max_size=4,
    )
)
def test_each_frame_gets_one_verdict_per_item_in_order(
    frames: list[list[tuple[int, bytes, bool]]],
) -> None:
    wire = b"".join(frame(item(k, m, tamper=t) for k, m, t in f) for f in frames)
    want = b"".join(bytes(0 if t else 1 for _, _, t in f) for f in frames)
    assert answers(wire) == want


def test_a_signature_under_another_key_does_not_match() -> None:
    key, signature, message = item(0, b"hello")
    other = bytes(KEYS[1].verify_key)
    assert answers(frame([(key, signature, message), (other, signature, message)])) == b"\x01\x00"


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        (b"\x00\x00", "count"),
        (frame([item(0, b"abc")])[:50], "inside an item"),
        (frame([item(0, b"abc")])[:-1], "inside a message"),
        ((MAX_BATCH + 1).to_bytes(4, "big"), "over"),
        (b"\x00\x00\x00\x01" + b"k" * 96 + (MAX_MESSAGE + 1).to_bytes(4, "big"), "over"),
    ],
)
def test_what_is_not_frames_is_refused(wire: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        answers(wire)


def test_frame_refuses_wrong_sizes() -> None:
    key, signature, message = item(0, b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        frame([(key[:31], signature, message)])
    with pytest.raises(ValueError, match="32 bytes"):
        frame([(key, signature + b"x", message)])
    with pytest.raises(ValueError, match="over"):
        frame([(key, signature, b"m" * (MAX_MESSAGE + 1))])


def test_the_process_answers_ignores_ctrl_c_and_ends_with_its_input() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pshare.security.checker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame([item(0, b"one"), item(1, b"two", tamper=True)]))
        proc.stdin.flush()
        assert proc.stdout.read(2) == b"\x01\x00"  # it runs: the handler is in place
        proc.send_signal(signal.SIGINT)  # what ctrl-C sends the tracker's whole group
        time.sleep(0.2)
        proc.stdin.write(frame([item(2, b"three")]))
        proc.stdin.close()
        assert proc.stdout.read() == b"\x01"
        assert proc.wait(PROCESS_TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait(PROCESS_TIMEOUT)


def test_the_process_refuses_garbage_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "p2pshare.security.checker"],
        input=b"\xff\xff\xff\xff",
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr.decode().strip().splitlines() == [
        f"signature checker: a frame of {0xFFFFFFFF} items is over {MAX_BATCH}"
    ]
