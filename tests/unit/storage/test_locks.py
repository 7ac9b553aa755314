"""Per-chunk locks in one process: exclusive per key, independent across keys, never leaked."""

from __future__ import annotations

import asyncio

import pytest

from p2pshare.storage.locks import KeyedLock, chunk_offset


async def test_one_key_is_held_by_one_task_at_a_time() -> None:
    locks = KeyedLock()
    inside = 0
    most = 0

    async def hold() -> None:
        nonlocal inside, most
        async with locks.hold("a"):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(hold() for _ in range(10)))
    assert most == 1
    assert len(locks) == 0


async def test_different_keys_do_not_wait_for_each_other() -> None:
    locks = KeyedLock()
    async with locks.hold("a"), asyncio.timeout(1), locks.hold("b"):
        assert len(locks) == 2
    assert len(locks) == 0


async def test_a_cancelled_waiter_leaves_no_lock_behind() -> None:
    locks = KeyedLock()
    async with locks.hold("a"):
        waiter = asyncio.create_task(_enter(locks, "a"))
        await asyncio.sleep(0)
        assert len(locks) == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(locks) == 0


async def _enter(locks: KeyedLock, key: str) -> None:
    async with locks.hold(key):
        pass


def test_each_chunk_gets_its_own_byte_of_the_lock_file() -> None:
    assert chunk_offset("0" * 64) == 0
    assert chunk_offset("f" * 64) == 2**60 - 1
    assert chunk_offset("ab" + "0" * 62) != chunk_offset("ac" + "0" * 62)
