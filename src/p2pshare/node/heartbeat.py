"""The node's background duties toward the tracker: announcing itself on every heartbeat, and
reporting what it served (download step 7). Both loops are owned by the caller's task group.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable

from p2pshare.core.errors import P2PShareError
from p2pshare.core.messages import (
    MAX_RECLAIMS_PER_ANNOUNCE,
    AuditTask,
    DownloadReport,
    NodeAnnounce,
    ReclaimReport,
    RepairTask,
)
from p2pshare.core.node_messages import DownloadAck
from p2pshare.node.tracker_client import TrackerClient
from p2pshare.storage.filestore import FileChunkStore

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.05
MAX_RETRY_DELAY = 30.0
"""Longest wait before a report of lost chunks is sent again."""
MAX_REPORT_QUEUE = 10_000
REPORT_ATTEMPTS = 5


def retry_delay(failures: int, longest: float) -> float:
    """Return the seconds to wait after ``failures`` failed calls in a row: 1, 2, 4, ... s,
    never more than ``longest``."""
    return min(longest, 0.5 * 2 ** min(failures, 6))


async def heartbeat_loop(
    tracker: TrackerClient,
    make_announce: Callable[[], NodeAnnounce],
    *,
    first_interval: float = 5.0,
    announced: asyncio.Event | None = None,
    on_repairs: Callable[[list[RepairTask]], None] | None = None,
    on_audits: Callable[[list[AuditTask]], None] | None = None,
    on_reclaim: Callable[[list[str]], None] | None = None,
) -> None:
    """Announce this node forever, at the interval the tracker asks for.

    ``make_announce`` builds a fresh announce (current free space) each time. A failed
    announce is logged and retried after a short, growing delay (never longer than the
    interval). ``announced`` is set after the first success; repair and audit tasks in an
    answer go to ``on_repairs`` and ``on_audits``, chunks to delete to ``on_reclaim`` (none of
    which may block). Runs until cancelled.
    """
    interval = first_interval
    failures = 0
    while True:
        try:
            ack = await tracker.announce(make_announce())
        except P2PShareError as exc:
            failures += 1
            delay = retry_delay(failures, interval)
            log.warning(
                "announce to %s failed (%s); retrying in %.1fs", tracker.base_url, exc.detail, delay
            )
            await asyncio.sleep(delay)
            continue
        if failures:
            log.info("tracker %s reachable again", tracker.base_url)
        failures = 0
        interval = max(MIN_INTERVAL, ack.heartbeat_interval)
        if ack.repairs and on_repairs is not None:
            on_repairs(ack.repairs)
        if ack.audits and on_audits is not None:
            on_audits(ack.audits)
        if ack.reclaim and on_reclaim is not None:
            on_reclaim(ack.reclaim)
        if announced is not None:
            announced.set()
        await asyncio.sleep(interval)


async def integrity_loop(store: FileChunkStore, lost: LostReporter, interval: float) -> None:
    """Every ``interval`` seconds, re-hash every stored chunk (the store quarantines those
    whose bytes no longer match) and hand the quarantined ones to ``lost``, which tells the
    tracker, so they are repaired elsewhere. Runs until cancelled."""
    while True:
        await asyncio.sleep(interval)
        report = await store.scan()
        log.info(
            "integrity scan: %d chunks checked, %d quarantined",
            report.checked,
            len(report.quarantined),
        )
        lost.record(report.quarantined)


async def broken_refs_loop(store: FileChunkStore, lost: LostReporter) -> None:
    """Report chunks of downloaded files to the tracker as lost as soon as the store finds them
    gone when used (the user changed or deleted the file), so downloaders stop asking this
    node for them; the integrity scan would tell the tracker only hours later. Runs until
    cancelled."""
    while True:
        ids = await store.broken_refs()
        log.info("%d chunks of downloaded files are gone; telling the tracker", len(ids))
        lost.record(ids)


class LostReporter:
    """Tells the tracker which chunks this node lost (``POST /v1/nodes/{id}/lost``), in
    batches, until the tracker has taken each.

    The chunks are gone from this node once they are recorded here (quarantined, or their
    file changed), so a report that does not arrive would leave the tracker listing them here
    until an audit: a tracker that is down or busy is asked again after a growing delay (at
    most ``MAX_RETRY_DELAY`` s), for as long as the node runs. A report the tracker refuses
    for what it says (4xx other than 401, 408 and 429) is logged and dropped. What waits is
    bounded by the chunks this node held. :meth:`record` never blocks.

    With a ``store``, what waits is also kept on disk (:meth:`FileChunkStore.lost_kept`)
    before it is sent, until the tracker takes it, and :meth:`run` starts with what a node
    stopped (or crashed) before reporting: a restart does not lose a report.
    """

    def __init__(
        self, tracker: TrackerClient, node_id: str, store: FileChunkStore | None = None
    ) -> None:
        self._tracker = tracker
        self._node_id = node_id
        self._store = store
        self._waiting: dict[str, None] = {}
        self._unkept: list[str] = []
        self._wake = asyncio.Event()
        self.reported = 0

    @property
    def waiting(self) -> int:
        """Return how many lost chunks the tracker has not taken yet."""
        return len(self._waiting)

    def record(self, chunk_ids: Iterable[str]) -> None:
        """Queue ``chunk_ids`` for the next report."""
        for cid in chunk_ids:
            self._waiting[cid] = None
            self._unkept.append(cid)
        if self._waiting:
            self._wake.set()

    async def run(self) -> None:
        """Send the waiting chunks (first those a run before this one left) until cancelled."""
        if self._store is not None:
            left = await self._store.lost_unreported()
            if left:
                log.info("%d lost chunks from before this start to report", len(left))
                for cid in left:
                    self._waiting[cid] = None
                self._wake.set()
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                await self._keep()  # before each send: what it holds is on disk first
                batch = list(itertools.islice(self._waiting, MAX_RECLAIMS_PER_ANNOUNCE))
                try:
                    await self._tracker.lost(ReclaimReport(node_id=self._node_id, chunk_ids=batch))
                except P2PShareError as exc:
                    if exc.status < 500 and exc.status not in (401, 408, 429):
                        log.warning("the tracker refused a report of lost chunks: %s", exc.detail)
                    else:
                        failures += 1
                        delay = retry_delay(failures, MAX_RETRY_DELAY)
                        log.warning(
                            "reporting %d lost chunks failed (%s); trying again in %.1f s",
                            len(self._waiting),
                            exc.detail,
                            delay,
                        )
                        await asyncio.sleep(delay)
                        continue
                    taken = 0
                else:
                    failures = 0
                    taken = len(batch)
                # forgotten on disk first: once ``waiting`` drops (or ``reported`` grows), the
                # record no longer holds the batch, even if the node stops right then
                if self._store is not None:
                    await self._store.lost_reported(batch)
                for cid in batch:
                    self._waiting.pop(cid, None)
                self.reported += taken

    async def _keep(self) -> None:
        """Keep on disk the chunks recorded since the last call (with a store)."""
        unkept, self._unkept = self._unkept, []
        if self._store is not None and unkept:
            await self._store.lost_kept(unkept)


class ServedReporter:
    """Queues downloaders' acks and reports the bytes served to the tracker (step 7).

    :meth:`record` is called from the ack handler and never blocks; :meth:`run` sends the
    reports, each with a bounded number of attempts. The queue is bounded: when it is full the
    oldest-waiting report is dropped with a warning (the download itself is unaffected).
    """

    def __init__(self, tracker: TrackerClient, node_id: str) -> None:
        self._tracker = tracker
        self._node_id = node_id
        self._queue: asyncio.Queue[DownloadAck] = asyncio.Queue(MAX_REPORT_QUEUE)
        self.reported = 0

    def record(self, ack: DownloadAck) -> None:
        """Queue ``ack`` for reporting."""
        if self._queue.full():
            dropped = self._queue.get_nowait()
            log.warning("report queue full: dropped the report for %s", dropped.file_id)
        self._queue.put_nowait(ack)

    async def run(self) -> None:
        """Send queued reports until cancelled."""
        while True:
            ack = await self._queue.get()
            report = DownloadReport(
                node_id=self._node_id, role="holder", bytes=ack.bytes, peer=ack.downloader
            )
            for attempt in range(REPORT_ATTEMPTS):
                try:
                    await self._tracker.downloads(ack.file_id, report)
                except P2PShareError as exc:
                    log.warning(
                        "report of bytes served for %s failed (%s), attempt %d",
                        ack.file_id,
                        exc.detail,
                        attempt + 1,
                    )
                    await asyncio.sleep(0.5 * 2**attempt)
                else:
                    self.reported += 1
                    break
