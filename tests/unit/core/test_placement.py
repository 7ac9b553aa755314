"""The placement planner: distinct holders, budgets honoured, load spread, clear refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.placement import ChunkNeed, PlacementError, plan_placement

MiB = 1024**2


def chunks(n: int, size: int = 4 * MiB, last: int | None = None) -> list[ChunkNeed]:
    out = [ChunkNeed(f"{i:064x}", size) for i in range(n)]
    if last is not None and out:
        out[-1] = ChunkNeed(out[-1].chunk_id, last)
    return out


def used(plan: dict[str, list[str]], needs: list[ChunkNeed]) -> dict[str, int]:
    size = {c.chunk_id: c.size for c in needs}
    total: dict[str, int] = {}
    for cid, holders in plan.items():
        for h in holders:
            total[h] = total.get(h, 0) + size[cid]
    return total


def test_two_replicas_on_distinct_nodes_spread_evenly() -> None:
    needs = chunks(6)
    plan = plan_placement(needs, {"a": 100 * MiB, "b": 100 * MiB, "c": 100 * MiB}, 2)
    assert set(plan) == {c.chunk_id for c in needs}
    assert all(len(set(h)) == 2 for h in plan.values())
    assert used(plan, needs) == {"a": 16 * MiB, "b": 16 * MiB, "c": 16 * MiB}


def test_spread_follows_free_space() -> None:
    needs = chunks(12)
    plan = plan_placement(needs, {"big": 300 * MiB, "small": 100 * MiB, "mid": 200 * MiB}, 1)
    u = used(plan, needs)
    assert u["big"] > u["mid"] > u["small"]


def test_budgets_are_never_exceeded() -> None:
    needs = chunks(5, last=MiB)
    budgets = {"a": 8 * MiB, "b": 9 * MiB, "c": 100 * MiB}
    plan = plan_placement(needs, budgets, 2)
    for node, n in used(plan, needs).items():
        assert n <= budgets[node]


def test_duplicate_chunk_ids_are_placed_once() -> None:
    same = ChunkNeed("a" * 64, MiB)
    plan = plan_placement([same, same, same], {"a": 2 * MiB, "b": 2 * MiB}, 2)
    assert plan == {"a" * 64: ["a", "b"]}


def test_empty_file_needs_nothing() -> None:
    assert plan_placement([], {}, 2) == {}


def test_exclude_keeps_holders_away() -> None:
    needs = chunks(1)
    plan = plan_placement(
        needs, {"a": 9 * MiB, "b": 9 * MiB, "c": 9 * MiB}, 2, exclude={needs[0].chunk_id: ["a"]}
    )
    assert sorted(plan[needs[0].chunk_id]) == ["b", "c"]


@pytest.mark.parametrize(
    ("budgets", "replicas", "needle"),
    [
        ({"a": 100 * MiB}, 2, "need 2 holders"),
        ({"a": 100 * MiB, "b": 0}, 2, "1 is available"),
        ({"a": 5 * MiB, "b": 5 * MiB}, 2, "offer"),
        # enough bytes in total, but chunk granularity leaves no room: 3 MiB left on each
        ({"a": 7 * MiB, "b": 7 * MiB, "c": 10 * MiB}, 2, "fits on only"),
    ],
)
def test_impossible_plans_are_refused(budgets: dict[str, int], replicas: int, needle: str) -> None:
    with pytest.raises(PlacementError, match=needle):
        plan_placement(chunks(3, size=4 * MiB, last=None), budgets, replicas)


def test_zero_replicas_refused() -> None:
    with pytest.raises(PlacementError):
        plan_placement(chunks(1), {"a": MiB}, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=1, max_value=4096),
    st.dictionaries(
        st.sampled_from(list("abcdefgh")), st.integers(min_value=0, max_value=200_000), max_size=8
    ),
    st.integers(min_value=1, max_value=4),
)
def test_any_plan_returned_is_valid(
    n: int, size: int, budgets: dict[str, int], replicas: int
) -> None:
    needs = chunks(n, size=size, last=max(1, size // 3))
    try:
        plan = plan_placement(needs, budgets, replicas)
    except PlacementError:
        # refused: then it really is impossible by a simple bound, or granularity bites
        return
    assert set(plan) == {c.chunk_id for c in needs}
    for holders in plan.values():
        assert len(holders) == replicas == len(set(holders))
        assert all(h in budgets for h in holders)
    for node, n_bytes in used(plan, needs).items():
        assert n_bytes <= budgets[node]


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=30), st.integers(min_value=2, max_value=6))
def test_equal_budgets_with_room_always_succeed(n: int, nodes: int) -> None:
    """With equal budgets of ceil(n*r/nodes)+1 chunks each, a plan always exists and is found."""
    replicas = min(2, nodes)
    per = -(-n * replicas // nodes) + 1
    budgets = {f"n{i}": per * MiB for i in range(nodes)}
    plan = plan_placement(chunks(n, size=MiB), budgets, replicas)
    assert len(plan) == n


def test_per_chunk_copies_for_resume_and_replacement() -> None:
    a, b = chunks(2)
    plan = plan_placement(
        [ChunkNeed(a.chunk_id, a.size, copies=1), ChunkNeed(b.chunk_id, b.size, copies=0)],
        {"x": 9 * MiB, "y": 9 * MiB},
        2,
        exclude={a.chunk_id: ["x"]},
    )
    assert plan == {a.chunk_id: ["y"]}
