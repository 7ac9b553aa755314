"""Running the tasks the tracker hands out with announce answers (repairs, audits).

:class:`TaskWorker` queues tasks without blocking the heartbeat, runs at most
``concurrency`` at a time, forgets nothing it has seen recently (a task delivered twice runs
once), and drops tasks when its bounded queue is full (the tracker plans them again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from p2pshare.core.errors import P2PShareError

log = logging.getLogger(__name__)

MAX_QUEUE = 256
REMEMBERED = 4096
REPORT_ATTEMPTS = 4


class HasTaskId(Protocol):
    @property
    def task_id(self) -> str: ...


T = TypeVar("T", bound=HasTaskId)


class TaskWorker(Generic[T]):
    """Runs ``handle`` on each submitted task; owned by the node's task group."""

    def __init__(
        self, name: str, handle: Callable[[T], Awaitable[None]], *, concurrency: int = 2
    ) -> None:
        self._name = name
        self._handle = handle
        self._concurrency = concurrency
        self._queue: asyncio.Queue[T] = asyncio.Queue(MAX_QUEUE)
        self._seen: OrderedDict[str, None] = OrderedDict()

    def submit(self, tasks: list[T]) -> None:
        """Queue new tasks (never blocks)."""
        for task in tasks:
            if task.task_id in self._seen:
                continue
            self._seen[task.task_id] = None
            while len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
            if self._queue.full():
                log.warning("%s queue full: task %s dropped", self._name, task.task_id)
                continue
            self._queue.put_nowait(task)

    async def run(self) -> None:
        """Work the queue until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for _ in range(self._concurrency):
                tg.create_task(self._work())

    async def _work(self) -> None:
        while True:
            await self._handle(await self._queue.get())


async def report_with_retries(what: str, send: Callable[[], Awaitable[object]]) -> bool:
    """Call ``send`` up to ``REPORT_ATTEMPTS`` times with growing pauses; return success."""
    for attempt in range(REPORT_ATTEMPTS):
        try:
            await send()
        except P2PShareError as exc:
            log.warning("%s failed (attempt %d): %s", what, attempt + 1, exc.detail)
            await asyncio.sleep(0.5 * 2**attempt)
        else:
            return True
    return False
