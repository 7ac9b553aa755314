"""Work for nodes that the tracker hands out with announce answers: an outbox per node.

A task waits in its node's queue until the node announces (:meth:`Outbox.take`), then has
``ttl`` seconds to be reported (:meth:`Outbox.pop`); one never taken or never reported is
returned by :meth:`Outbox.expired`. Everything is in memory, synchronous and bounded by the
callers' budgets: after a tracker restart the planners simply plan again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Pending(Generic[T]):
    """A task for ``node``, due to be reported by ``deadline`` (monotonic seconds)."""

    node: str
    task: T
    deadline: float


class Outbox(Generic[T]):
    """Tasks by id, queued per node."""

    def __init__(self) -> None:
        self._pending: dict[str, Pending[T]] = {}
        self._queues: dict[str, deque[str]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[Pending[T]]:
        return iter(list(self._pending.values()))

    def add(self, task_id: str, node: str, task: T, deadline: float) -> None:
        """Queue ``task`` for ``node``; it expires at ``deadline`` unless taken before."""
        self._pending[task_id] = Pending(node, task, deadline)
        self._queues.setdefault(node, deque()).append(task_id)

    def take(self, node: str, limit: int, now: float, ttl: float) -> list[T]:
        """Return up to ``limit`` tasks queued for ``node``; each must be reported by now+ttl."""
        queue = self._queues.get(node)
        out: list[T] = []
        while queue and len(out) < limit:
            pending = self._pending.get(queue.popleft())
            if pending is None:
                continue
            pending.deadline = now + ttl
            out.append(pending.task)
        if queue is not None and not queue:
            del self._queues[node]
        return out

    def get(self, task_id: str) -> Pending[T] | None:
        """Return the pending task ``task_id``, or None."""
        return self._pending.get(task_id)

    def pop(self, task_id: str) -> Pending[T] | None:
        """Forget task ``task_id`` (it was reported) and return it, or None."""
        return self._pending.pop(task_id, None)

    def expired(self, now: float) -> list[Pending[T]]:
        """Forget and return the tasks whose deadline passed."""
        gone = [tid for tid, p in self._pending.items() if p.deadline < now]
        return [self._pending.pop(tid) for tid in gone]
