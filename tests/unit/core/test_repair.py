"""The repair planner, with plain values."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.repair import Capacity, ChunkState, Replica, plan_repairs


def up(node: str, *, good: bool = True) -> Replica:
    return Replica(node, online=True, live=True, good=good)


def silent(node: str) -> Replica:
    """Offline, still within the grace period."""
    return Replica(node, online=False, live=True)


def gone(node: str) -> Replica:
    """Offline past the grace period."""
    return Replica(node, online=False, live=False)


def chunk(
    cid: str, *replicas: Replica, target: int = 3, size: int = 10, **kw: object
) -> ChunkState:
    return ChunkState(cid, size, target, replicas, **kw)  # type: ignore[arg-type]


def test_a_chunk_at_target_or_within_grace_needs_nothing() -> None:
    cap = Capacity(free={"d": 100})
    assert plan_repairs([chunk("c", up("a"), up("b"), silent("x"))], cap) == []


def test_a_lost_holder_is_replaced_from_an_online_source_on_the_freest_node() -> None:
    cap = Capacity(free={"a": 100, "b": 100, "d": 50, "e": 80})
    [a] = plan_repairs([chunk("c", up("a"), up("b"), gone("x"))], cap)
    assert (a.chunk_id, a.source, a.target, a.size) == ("c", "a", "e", 10)
    assert cap.free["e"] == 70
    assert cap.busy == {"a": 1}


def test_the_target_never_already_holds_the_chunk_even_a_dead_or_bad_copy() -> None:
    cap = Capacity(free={"x": 1000, "b": 1000, "d": 1})
    reps = (up("a"), up("b", good=False), gone("x"))
    assert plan_repairs([chunk("c", *reps, target=2)], cap) == []  # d has no room


def test_a_bad_copy_does_not_count_and_is_never_a_source() -> None:
    cap = Capacity(free={"d": 100, "e": 100})
    out = plan_repairs([chunk("c", up("a", good=False), up("b"), target=2)], cap)
    assert [(x.source, x.target) for x in out] == [("b", "d")]


def test_no_online_good_source_means_no_repair_yet() -> None:
    cap = Capacity(free={"d": 100})
    assert plan_repairs([chunk("c", silent("a"), gone("b"), target=3)], cap) == []


def test_copies_in_flight_are_not_planned_twice() -> None:
    cap = Capacity(free={"d": 100, "e": 100})
    c = chunk("c", up("a"), gone("x"), gone("y"), in_flight=1)
    assert len(plan_repairs([c], cap)) == 1
    assert plan_repairs([chunk("c", up("a"), gone("x"), in_flight=2)], cap) == []


def test_recently_failed_targets_are_skipped() -> None:
    cap = Capacity(free={"d": 100, "e": 50})
    [a] = plan_repairs([chunk("c", up("a"), gone("x"), target=2, tried=frozenset({"d"}))], cap)
    assert a.target == "e"


def test_fewest_live_first_and_bounded_by_budget_and_per_source() -> None:
    cap = Capacity(free={f"t{i}": 1000 for i in range(10)})
    chunks = [
        chunk("c1", up("a"), up("b"), gone("x")),  # 1 missing, 2 live
        chunk("c2", up("a"), gone("x"), gone("y")),  # 2 missing, 1 live
    ]
    out = plan_repairs(chunks, cap, budget=2)
    assert [x.chunk_id for x in out] == ["c2", "c2"]
    cap = Capacity(free={f"t{i}": 1000 for i in range(10)})
    out = plan_repairs(chunks, cap, per_source=1)
    assert sorted((x.chunk_id, x.source) for x in out) == [("c1", "b"), ("c2", "a")]


@given(
    holders=st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.booleans(), st.booleans(), st.booleans()),
        max_size=6,
        unique_by=lambda t: t[0],
    ),
    free=st.dictionaries(st.sampled_from("abcdefghij"), st.integers(0, 40), max_size=10),
    target=st.integers(1, 5),
    size=st.integers(1, 20),
)
def test_plans_are_always_sound(
    holders: list[tuple[str, bool, bool, bool]], free: dict[str, int], target: int, size: int
) -> None:
    reps = tuple(Replica(n, online=on, live=on or live, good=good) for n, on, live, good in holders)
    c = ChunkState("c", size, target, reps)
    before = dict(free)
    out = plan_repairs([c], Capacity(free=free))
    assert len(out) <= c.missing
    targets = [a.target for a in out]
    assert len(targets) == len(set(targets))
    for a in out:
        assert a.target not in {r.node_id for r in reps}
        assert any(r.node_id == a.source and r.online and r.good for r in reps)
        assert a.target in before
    for node, room in free.items():
        assert room >= 0
        assert before[node] - room == size * targets.count(node)
