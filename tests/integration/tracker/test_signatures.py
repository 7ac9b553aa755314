"""The tracker's signature checks (``tracker/signatures.py``) with a real checker process:
verdicts in order, in frames, none lost when the process dies or stops."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pshare.security.checker import MAX_MESSAGE
from p2pshare.security.keys import KeyPair
from p2pshare.security.signing import Unchecked, sign_request, unchecked
from p2pshare.tracker import signatures
from p2pshare.tracker.signatures import SignatureChecks, worth_a_process

NOW = 1_800_000_000.0
TARGET = "/v1/nodes/announce"
KEY = KeyPair.of(Ed25519PrivateKey.generate())
WAIT = 10.0

pytestmark = pytest.mark.skipif(not worth_a_process(), reason="one core: checks stay inline")


def pending(i: int, *, good: bool = True) -> Unchecked:
    """Return request ``i``'s header, unchecked; a bad one's body is not what was signed."""
    digest = f"{i:064x}"
    header = sign_request(KEY, "POST", TARGET, digest, now=NOW)["Authorization"]
    return unchecked(header, "POST", TARGET, digest if good else f"{i + 1:064x}", now=NOW)


def submit_all(checks: SignatureChecks, items: list[Unchecked]) -> list[tuple[int, bool]]:
    """Submit every item in this turn of the loop; return where the verdicts go."""
    got: list[tuple[int, bool]] = []
    for i, p in enumerate(items):
        checks.submit(p, lambda ok, i=i: got.append((i, ok)))
    return got


async def until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"no {what} within {WAIT} s") from None


async def test_verdicts_come_back_in_order_from_the_process() -> None:
    items = [pending(i, good=i % 3 != 0) for i in range(50)]
    checks = SignatureChecks()
    await checks.start()
    try:
        assert checks.running
        got = submit_all(checks, items)
        assert got == []  # none at once: they went to the process
        await until(lambda: len(got) == len(items), "every verdict")
        assert got == [(i, i % 3 != 0) for i in range(len(items))]
        assert (checks.by_process, checks.frames) == (50, 1)  # one turn of the loop, one frame
        assert await checks.matches(pending(99)) is True
        assert await checks.matches(pending(98, good=False)) is False
        assert checks.by_process == 52
    finally:
        await checks.stop()
    assert not checks.running


async def test_checks_before_start_and_after_stop_are_made_at_once() -> None:
    checks = SignatureChecks()
    got = submit_all(checks, [pending(1), pending(2, good=False)])
    assert got == [(0, True), (1, False)]
    await checks.start()
    await checks.stop()
    got = submit_all(checks, [pending(3, good=False), pending(4)])
    assert got == [(0, False), (1, True)]
    assert checks.by_process == 0


async def test_stop_answers_what_was_submitted_last() -> None:
    checks = SignatureChecks()
    await checks.start()
    got = submit_all(checks, [pending(i, good=i != 7) for i in range(20)])
    await checks.stop()  # the frame was not even sent yet
    assert got == [(i, i != 7) for i in range(20)]


async def test_a_dead_process_loses_no_verdict_and_checks_go_inline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    checks = SignatureChecks()
    await checks.start()
    try:
        transport = checks._transport
        assert transport is not None
        os.kill(transport.get_pid(), signal.SIGSTOP)  # it reads nothing more
        got = submit_all(checks, [pending(i, good=i % 2 == 0) for i in range(30)])
        await asyncio.sleep(0.05)
        assert got == []  # sent, waiting
        with caplog.at_level(logging.ERROR, logger="p2pshare.tracker.signatures"):
            os.kill(transport.get_pid(), signal.SIGKILL)
            await until(lambda: len(got) == 30, "the verdicts of the dead process's checks")
        assert got == [(i, i % 2 == 0) for i in range(30)]
        assert not checks.running
        assert "the signature checker ended" in caplog.text
        later = submit_all(checks, [pending(40, good=False)])
        assert later == [(0, False)]  # inline now
    finally:
        await checks.stop()


async def test_a_process_that_answers_nothing_is_killed_and_checks_go_inline(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signatures, "STALL_SECONDS", 0.3)
    checks = SignatureChecks()
    await checks.start()
    try:
        transport = checks._transport
        assert transport is not None
        os.kill(transport.get_pid(), signal.SIGSTOP)  # alive, answering nothing
        with caplog.at_level(logging.ERROR, logger="p2pshare.tracker.signatures"):
            got = submit_all(checks, [pending(i, good=i != 3) for i in range(10)])
            await asyncio.sleep(0.1)
            assert got == []
            await until(lambda: len(got) == 10, "verdict after the stall")
        assert got == [(i, i != 3) for i in range(10)]
        assert "answered nothing for" in caplog.text
        assert not checks.running
        async with asyncio.timeout(WAIT):
            while transport.get_returncode() is None:
                await asyncio.sleep(0.01)
        assert transport.get_returncode() == -signal.SIGKILL
    finally:
        await checks.stop()


async def test_without_a_checker_process_checks_stay_inline(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(signatures, "CHECKER", [str(tmp_path / "no-such-program")])
    checks = SignatureChecks()
    with caplog.at_level(logging.WARNING, logger="p2pshare.tracker.signatures"):
        await checks.start()
    assert not checks.running
    assert "no checker process" in caplog.text
    assert submit_all(checks, [pending(1), pending(2, good=False)]) == [(0, True), (1, False)]
    await checks.stop()


async def test_big_batches_go_in_several_frames_and_long_messages_are_checked_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signatures, "MAX_BATCH", 4)
    long_target = "/v1/" + "x" * (MAX_MESSAGE + 1)
    header = sign_request(KEY, "POST", long_target, "0" * 64, now=NOW)["Authorization"]
    long = unchecked(header, "POST", long_target, "0" * 64, now=NOW)
    checks = SignatureChecks()
    await checks.start()
    try:
        got = submit_all(checks, [pending(i, good=i != 5) for i in range(10)])
        inline = submit_all(checks, [long])
        assert inline == [(0, True)]
        await until(lambda: len(got) == 10, "every verdict")
        assert got == [(i, i != 5) for i in range(10)]
        assert (checks.by_process, checks.frames) == (10, 3)
    finally:
        await checks.stop()
