"""The download scheduler, driven with plain values."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.scheduler import (
    ENDGAME_COPIES,
    FETCH_BUDGET,
    ChunkSource,
    DownloadScheduler,
    Request,
    fetch_limits,
    worth_new_sources,
)

# the scheduler's bounds and the draws of a simulated download
HOLDERS = st.integers(min_value=1, max_value=5)
PER_HOLDER = st.integers(min_value=1, max_value=4)
TOTAL = st.integers(min_value=1, max_value=12)
SEED = st.integers(min_value=0, max_value=2**32)


def cid(i: int) -> str:
    return f"{i:064x}"


def source(i: int, *holders: str) -> ChunkSource:
    return ChunkSource(cid(i), 100, (i,), holders)


def random_sources(rng: random.Random, n: int, holders: int) -> list[ChunkSource]:
    """``n`` chunks, each on 1 to ``holders`` of the holders h0, h1, ..., drawn by ``rng``."""
    names = [f"h{i}" for i in range(holders)]
    return [
        ChunkSource(cid(i), 10, (i,), tuple(rng.sample(names, rng.randint(1, holders))))
        for i in range(n)
    ]


def test_rarest_first() -> None:
    s = DownloadScheduler(
        [source(0, "a", "b", "c"), source(1, "a"), source(2, "a", "b")], per_holder=1, total=1
    )
    assert s.next_requests() == [Request(cid(1), "a")]


def test_least_loaded_holder_and_bounds() -> None:
    s = DownloadScheduler([source(i, "a", "b") for i in range(10)], per_holder=2, total=3)
    reqs = s.next_requests()
    assert len(reqs) == 3
    holders = [r.holder for r in reqs]
    assert holders.count("a") <= 2 and holders.count("b") <= 2
    assert s.next_requests() == []  # total bound reached
    s.done(reqs[0].chunk_id, reqs[0].holder)
    more = s.next_requests()
    assert len(more) == 1
    assert more[0].holder == reqs[0].holder  # the holder that just freed a slot


def test_failure_retries_on_another_holder_and_never_the_same() -> None:
    s = DownloadScheduler([source(0, "a", "b")], per_holder=4, total=4, endgame=0)
    (r,) = s.next_requests()
    s.failed(r.chunk_id, r.holder, "timeout")
    (r2,) = s.next_requests()
    assert r2.holder != r.holder
    s.failed(r2.chunk_id, r2.holder, "error")
    assert s.next_requests() == []
    assert s.stuck == [cid(0)]
    assert not s.finished


def test_bad_hash_is_recorded_for_reporting() -> None:
    s = DownloadScheduler([source(0, "evil", "good")], per_holder=4, total=4, endgame=0)
    (r,) = s.next_requests()
    assert r.holder == "evil"  # tracker order breaks the tie
    s.failed(r.chunk_id, "evil", "bad-hash")
    assert s.bad_holders == {"evil": {cid(0)}}
    (r2,) = s.next_requests()
    assert r2.holder == "good"
    s.done(r2.chunk_id, "good")
    assert s.finished


def test_a_failing_holder_is_dropped_after_max_errors() -> None:
    s = DownloadScheduler([source(i, "x") for i in range(3)], per_holder=1, total=1, max_errors=2)
    for _ in range(2):
        (r,) = s.next_requests()
        s.failed(r.chunk_id, "x", "error")
    # x failed twice in a row: it is dropped, even for the chunk it was never asked for
    assert s.next_requests() == []
    assert sorted(s.stuck) == [cid(0), cid(1), cid(2)]


def test_a_success_resets_the_error_run() -> None:
    s = DownloadScheduler([source(i, "x") for i in range(3)], per_holder=1, total=1, max_errors=2)
    (r,) = s.next_requests()
    s.failed(r.chunk_id, "x", "error")
    (r,) = s.next_requests()
    s.done(r.chunk_id, "x")
    (r,) = s.next_requests()
    assert r.holder == "x"


def test_resume_skips_present_chunks() -> None:
    s = DownloadScheduler([source(0, "a"), source(1, "a")])
    s.mark_done(cid(0))
    assert [r.chunk_id for r in s.next_requests()] == [cid(1)]
    assert s.remaining == 1


def test_reports_must_match_a_request() -> None:
    s = DownloadScheduler([source(0, "a")])
    with pytest.raises(ValueError, match="in flight"):
        s.done(cid(0), "a")
    (r,) = s.next_requests()
    with pytest.raises(ValueError, match="in flight"):
        s.done(r.chunk_id, "b")


def test_added_holder_unsticks_a_chunk() -> None:
    s = DownloadScheduler([source(0, "a")])
    (r,) = s.next_requests()
    s.failed(r.chunk_id, "a", "error")
    assert s.stuck == [cid(0)]
    assert s.add_holder(cid(0), "leecher")
    assert not s.add_holder(cid(0), "leecher")  # known already
    assert not s.add_holder(cid(9), "leecher")  # not a chunk of this download
    assert s.next_requests() == [Request(cid(0), "leecher")]
    s.done(cid(0), "leecher")
    assert not s.add_holder(cid(0), "late")  # done: nothing to add


def test_duplicates_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        DownloadScheduler([source(0, "a"), source(0, "b")])


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=25), HOLDERS, PER_HOLDER, TOTAL, SEED)
def test_simulated_downloads_respect_bounds_and_finish(
    n: int, holders: int, per_holder: int, total: int, seed: int
) -> None:
    """Random outcomes: bounds always hold; with one reliable holder per chunk, it finishes."""
    rng = random.Random(seed)
    reliable = "h0"
    srcs = random_sources(rng, n, holders)
    srcs = [
        s
        if reliable in s.holders
        else ChunkSource(s.chunk_id, 10, s.indices, (*s.holders, reliable))
        for s in srcs
    ]
    s = DownloadScheduler(srcs, per_holder=per_holder, total=total, max_errors=10**6)
    flying: list[Request] = []
    for _ in range(10_000):
        flying += s.next_requests()
        load: dict[str, int] = {}
        for r in flying:
            load[r.holder] = load.get(r.holder, 0) + 1
        assert len(flying) <= total
        assert all(v <= per_holder for v in load.values())
        assert len(set(flying)) == len(flying)
        copies = Counter(r.chunk_id for r in flying)
        assert all(v <= 2 for v in copies.values())
        if any(v > 1 for v in copies.values()):
            assert s.remaining <= s.endgame  # duplicates only in the endgame
        if not flying:
            break
        r = flying.pop(rng.randrange(len(flying)))
        if r.holder != reliable and rng.random() < 0.5:
            s.failed(r.chunk_id, r.holder, rng.choice(["error", "timeout", "bad-hash"]))
        else:
            s.done(r.chunk_id, r.holder)
            gone = s.cancelled()
            assert all(g.chunk_id == r.chunk_id for g in gone)
            flying = [f for f in flying if f not in gone]
    assert s.finished
    assert s.stuck == []
    assert reliable not in s.bad_holders


class Scanning(DownloadScheduler):
    """The oracle: the same rules applied by scanning every chunk at every call (what the
    scheduler did before it kept its counts and its queue of waiting chunks)."""

    def next_requests(self) -> list[Request]:
        out: list[Request] = []
        left = [c for c in self._chunks.values() if not c.done]
        waiting = [c for c in left if not c.in_flight]
        waiting.sort(key=lambda c: (len(self._usable(c)), self._tiebreak[c.source.chunk_id]))
        for c in waiting:
            if sum(self._load.values()) >= self.total:
                break
            self._ask(c, out)
        if not left or len(left) > self.endgame or any(not c.in_flight for c in left):
            return out
        for c in sorted(left, key=lambda c: (len(c.in_flight), self._tiebreak[c.source.chunk_id])):
            if sum(self._load.values()) >= self.total:
                break
            if len(c.in_flight) < ENDGAME_COPIES:
                self._ask(c, out)
        return out

    @property
    def state(self) -> tuple[int, bool, int, list[str]]:
        chunks = self._chunks.values()
        return (
            sum(self._load.values()),
            all(c.done for c in chunks),
            sum(not c.done for c in chunks),
            sorted(
                i
                for i, c in self._chunks.items()
                if not c.done and not c.in_flight and not self._usable(c)
            ),
        )


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=30),
    HOLDERS,
    PER_HOLDER,
    TOTAL,
    st.integers(min_value=0, max_value=4),
    SEED,
)
def test_the_scheduler_decides_as_a_scan_of_every_chunk_would(
    n: int, holders: int, per_holder: int, total: int, endgame: int, seed: int
) -> None:
    """Random downloads (failures, bad hashes, dropped holders, sources added on the way,
    chunks already present): every call hands out the same requests, in the same order, as
    the rules applied by scanning every chunk, and the counts agree."""
    rng = random.Random(seed)
    srcs = random_sources(rng, n, holders)
    kw = {"per_holder": per_holder, "total": total, "max_errors": 2, "endgame": endgame}
    fast = DownloadScheduler(srcs, rng=random.Random(seed), **kw)
    slow = Scanning(srcs, rng=random.Random(seed), **kw)
    present = rng.sample(range(n), rng.randint(0, n // 3))
    for i in present:
        fast.mark_done(cid(i))
        slow.mark_done(cid(i))
    flying: list[Request] = []
    for _ in range(2_000):
        got = fast.next_requests()
        assert got == slow.next_requests()
        flying += got
        assert (fast.in_flight, fast.finished, fast.remaining, sorted(fast.stuck)) == slow.state
        if rng.random() < 0.1:  # a swarm look: another downloader holds some chunk now
            peer, chunk = f"p{rng.randrange(3)}", cid(rng.randrange(n))
            assert fast.add_holder(chunk, peer) == slow.add_holder(chunk, peer)
        if not flying:
            break
        r = flying.pop(rng.randrange(len(flying)))
        if rng.random() < 0.3:
            kind = rng.choice(["error", "timeout", "bad-hash"])
            fast.failed(r.chunk_id, r.holder, kind)
            slow.failed(r.chunk_id, r.holder, kind)
        else:
            fast.done(r.chunk_id, r.holder)
            slow.done(r.chunk_id, r.holder)
            gone = fast.cancelled()
            assert gone == slow.cancelled()
            flying = [f for f in flying if f not in gone]
    assert fast.bad_holders == slow.bad_holders


@pytest.mark.parametrize(
    ("layout", "total"),
    [
        ("three holders of every chunk", 12),
        # the one seeder is full, and a holder with room has nothing left to give: the waiting
        # chunks must not all be looked at to find that out
        ("one seeder and a peer of one chunk", 8),
    ],
)
def test_a_decision_does_not_look_at_every_chunk(layout: str, total: int) -> None:
    """A download of 2,000 chunks looks at a chunk's holders a few times per chunk, not once
    per chunk per decision (the scan before took about n * n / 2 looks: 2 million here, and
    2.8 minutes of CPU for a 64 GiB file)."""

    class Counting(DownloadScheduler):
        looks = 0

        def _usable(self, c: Any) -> list[str]:
            Counting.looks += 1
            return super()._usable(c)

    n = 2_000
    if layout.startswith("three"):
        sources = [source(i, "a", "b", "c") for i in range(n)]
    else:
        sources = [source(0, "a", "b"), *(source(i, "a") for i in range(1, n))]
    s = Counting(sources, per_holder=4, total=total)
    flying: list[Request] = []
    while not s.finished:
        flying += s.next_requests()
        r = flying.pop(0)
        s.done(r.chunk_id, r.holder)
        gone = s.cancelled()
        flying = [f for f in flying if f not in gone]
    assert Counting.looks <= 5 * n


def test_endgame_asks_a_second_holder_and_cancels_the_loser() -> None:
    s = DownloadScheduler([source(0, "a", "b"), source(1, "a", "b")], per_holder=4, total=8)
    first = s.next_requests()
    # both chunks in flight and few left: each also goes to the other holder
    assert sorted((r.chunk_id, r.holder) for r in first) == sorted(
        [(cid(0), "a"), (cid(0), "b"), (cid(1), "a"), (cid(1), "b")]
    )
    assert s.next_requests() == []  # at most two copies of a chunk at once
    s.done(cid(0), "b")
    assert s.cancelled() == [Request(cid(0), "a")]
    assert s.cancelled() == []
    s.failed(cid(1), "a", "timeout")
    s.done(cid(1), "b")
    assert s.cancelled() == []
    assert s.finished and s.in_flight == 0


def test_no_endgame_while_chunks_wait_or_when_disabled() -> None:
    many = [source(i, "a", "b") for i in range(6)]
    s = DownloadScheduler(many, per_holder=1, total=8, endgame=4)
    reqs = s.next_requests()
    assert len(reqs) == 2 and len({r.chunk_id for r in reqs}) == 2  # 4 still wait
    off = DownloadScheduler([source(0, "a", "b")], per_holder=4, total=8, endgame=0)
    assert len(off.next_requests()) == 1


def test_equally_rare_chunks_go_in_a_different_order_for_each_download() -> None:
    """Downloaders starting together must not all ask for the same chunks first."""
    chunks = [source(i, "seed") for i in range(32)] + [source(99, "only")]
    firsts = set()
    for seed in range(5):
        s = DownloadScheduler(chunks, per_holder=1, total=2, rng=random.Random(seed))
        reqs = s.next_requests()
        # the rarest (one holder each, all tie) are ordered by this download's own draw
        firsts.add(next(r.chunk_id for r in reqs if r.holder == "seed"))
    assert len(firsts) > 1
    rare = [source(0, "a", "b", "c"), source(1, "a")]
    s = DownloadScheduler(rare, per_holder=4, total=1, rng=random.Random(7))
    assert s.next_requests() == [Request(cid(1), "a")]  # rarest first, whatever the draw


# --- when a download looks for new sources ------------------------------------------------

FAST = 32 * 2**20
MIB = 2**20


def looks(left: int, fetched: int, elapsed: float, chunk_bytes: int = 4 * MIB) -> bool:
    return worth_new_sources(
        left, fetched, elapsed, horizon=6.0, chunk_bytes=chunk_bytes, fast=FAST
    )


def test_a_fast_download_near_its_end_does_not_look() -> None:
    # 50 chunks of 4 MiB in 2 s: 100 MiB/s; 100 left is 4 s more, 200 left 8 s
    assert not looks(100, 50, 2.0)
    assert looks(200, 50, 2.0)
    assert looks(150, 50, 2.0)  # exactly the horizon


def test_a_slow_download_looks_to_its_end() -> None:
    # 4 chunks of 256 KiB a second: 1 MiB/s, one chunk left
    assert looks(1, 8, 2.0, chunk_bytes=256 * 1024)


def test_a_stalled_just_started_or_finished_download() -> None:
    assert looks(5, 0, 2.0)  # nothing came: look for anyone
    assert looks(5, 3, 0.0)  # no pace known yet
    assert not looks(0, 10, 2.0)  # nothing left to fetch


@given(
    st.integers(1, 10_000),
    st.integers(1, 10_000),
    st.integers(1, 10_000),
    st.floats(0.01, 1e4),
    st.floats(0.0, 1e4),
)
def test_more_left_or_a_slower_pace_never_stops_the_looking(
    left: int, more: int, fetched: int, elapsed: float, horizon: float
) -> None:
    def look(left: int, elapsed: float) -> bool:
        return worth_new_sources(
            left, fetched, elapsed, horizon=horizon, chunk_bytes=4 * MIB, fast=FAST
        )

    if look(left, elapsed):
        assert look(left + more, elapsed)
        assert look(left, elapsed * 2)


MiB = 2**20


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        (64 * 1024, (8, 4)),
        (4 * MiB, (8, 4)),
        (8 * MiB, (4, 2)),
        (16 * MiB, (2, 1)),
        (64 * MiB, (2, 1)),
    ],
)
def test_fetch_limits_at_the_default_budget(chunk: int, expected: tuple[int, int]) -> None:
    assert fetch_limits(chunk, budget=FETCH_BUDGET, total=8, per_holder=4) == expected


@given(
    st.integers(min_value=1, max_value=2**27),
    st.integers(min_value=1, max_value=2**30),
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=1, max_value=64),
)
def test_fetch_limits_keep_memory_within_the_budget_or_two_chunks(
    largest: int, budget: int, total: int, per_holder: int
) -> None:
    got_total, got_per_holder = fetch_limits(
        largest, budget=budget, total=total, per_holder=per_holder
    )
    assert 1 <= got_per_holder <= per_holder
    assert got_per_holder <= got_total
    assert got_total <= total
    # the chunks held at once fit the budget, or are the two a download needs at least
    assert got_total * largest <= budget or got_total == min(total, 2)
    if total * largest <= budget and per_holder <= total:  # the node's limits as they are
        assert (got_total, got_per_holder) == (total, per_holder)


@pytest.mark.parametrize("bad", [(0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0)])
def test_fetch_limits_refuse_nonsense(bad: tuple[int, int, int, int]) -> None:
    largest, budget, total, per_holder = bad
    with pytest.raises(ValueError, match="at least 1"):
        fetch_limits(largest, budget=budget, total=total, per_holder=per_holder)
