"""The placement planner: which holders get which chunk of an upload (pure, no I/O).

Rules (design.md §2 step 3, lessons 3): every chunk goes to ``replicas`` *distinct* holders;
no holder receives more than the budget the user allotted it; load is spread in proportion to
the budgets (each chunk goes to the holders whose budget would be least filled after taking it,
ties broken by node id, so the same input always gives the same plan, and no holder is left
empty while others fill up). ``--auto`` is simply every holder's free space as its budget.
A plan that cannot hold the file is refused before anything is sent, with the reason.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from p2pshare.core.errors import InvalidInput
from p2pshare.core.sizes import format_size


class PlacementError(InvalidInput):
    """The chosen holders and budgets cannot hold the file with the requested replicas."""

    code = "placement-impossible"


@dataclass(frozen=True, slots=True)
class ChunkNeed:
    """A chunk to place: its id, size in bytes, and (when not ``replicas``) how many copies."""

    chunk_id: str
    size: int
    copies: int | None = None


def plan_placement(
    chunks: Iterable[ChunkNeed],
    budgets: Mapping[str, int],
    replicas: int,
    *,
    exclude: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, list[str]]:
    """Return ``{chunk_id: [holder, ...]}`` with ``replicas`` distinct holders per chunk.

    ``budgets`` maps each candidate holder to the bytes it may receive. A chunk id listed twice
    is placed once. A need with ``copies`` set gets that many holders instead (0 = none; used
    when some replicas already exist, e.g. a resumed upload or a re-placement). ``exclude``
    maps a chunk id to holders that must not get it (they already
    have it, or just failed). Raises :class:`PlacementError` when the plan is impossible: too
    few holders, or not enough budget; nothing is half-planned.
    """
    if replicas < 1:
        raise PlacementError(f"replicas must be at least 1, got {replicas}")
    unique: dict[str, int] = {}
    copies: dict[str, int] = {}
    for need in chunks:
        if need.chunk_id not in unique:
            unique[need.chunk_id] = need.size
            copies[need.chunk_id] = replicas if need.copies is None else need.copies
    unique = {c: size for c, size in unique.items() if copies[c] > 0}
    exclude = exclude or {}
    usable = {node: budget for node, budget in budgets.items() if budget > 0}
    most = max(copies[c] for c in unique) if unique else 0
    if len(usable) < most:
        raise PlacementError(
            f"{most} replicas need {most} holders with space; "
            f"{len(usable)} {'is' if len(usable) == 1 else 'are'} available"
        )
    needed = sum(copies[c] * size for c, size in unique.items())
    offered = sum(usable.values())
    if needed > offered:
        raise PlacementError(
            f"{most} replicas need {format_size(needed)}; the chosen holders offer "
            f"{format_size(offered)}"
        )
    left = dict(usable)
    filled = dict.fromkeys(usable, 0)
    plan: dict[str, list[str]] = {}
    # biggest chunks first, so the ragged last chunk fills the gaps
    for chunk_id, size in sorted(unique.items(), key=lambda kv: (-kv[1], kv[0])):
        banned = set(exclude.get(chunk_id, ()))
        fits = (
            ((filled[n] + size) / usable[n], n) for n in left if left[n] >= size and n not in banned
        )
        want = copies[chunk_id]
        chosen = [n for _, n in heapq.nsmallest(want, fits)]
        if len(chosen) < want:
            raise PlacementError(
                f"chunk {chunk_id[:12]} ({format_size(size)}) fits on only {len(chosen)} "
                f"holder(s) with room, {want} needed"
            )
        for n in chosen:
            left[n] -= size
            filled[n] += size
        plan[chunk_id] = chosen
    return plan
