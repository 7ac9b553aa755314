"""A node process, assembled: the chunk store, the peer API (on the node's address), the control
API (on loopback only), the transfer manager, the heartbeat and the served-bytes reporter, all
owned by one task group and stopped together.

The node room provides the servers and clients, the transfer room the manager; they meet here,
so neither imports the other's insides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from p2pshare.core.admission import ServerLimits
from p2pshare.core.errors import InvalidInput, P2PShareError
from p2pshare.core.messages import NodeAnnounce, build_messages
from p2pshare.node import control_api, peer_api, zerocopy
from p2pshare.node.guard import GUARD, PeerGuard
from p2pshare.node.heartbeat import (
    LostReporter,
    ServedReporter,
    broken_refs_loop,
    heartbeat_loop,
    integrity_loop,
)
from p2pshare.node.http import new_session
from p2pshare.node.identity import NodeIdentity
from p2pshare.node.limits import RateLimiter
from p2pshare.node.peer_client import PeerClient
from p2pshare.node.problems import problems_middleware
from p2pshare.node.streams import StreamPool
from p2pshare.node.tracker_client import TrackerClient
from p2pshare.security.keys import load_or_create_identity, server_context
from p2pshare.security.signing import ReplayGuard
from p2pshare.storage.filestore import FileChunkStore
from p2pshare.transfer.audit import audit_worker
from p2pshare.transfer.context import NodeContext
from p2pshare.transfer.manager import TransferManager
from p2pshare.transfer.reclaim import ReclaimBatch, reclaim_worker
from p2pshare.transfer.repair import repair_worker

log = logging.getLogger(__name__)

IO_THREADS = 32
"""Worker threads for the node's blocking file work (asyncio.to_thread)."""

RUNTIME_FILE = "node.json"
EXPIRE_EVERY = 60.0
OFFLINE_TIMEOUT = 3.0
"""Most seconds a stopping node waits for the tracker to note it offline."""
JSON_BODY_LIMIT = 1 << 20
WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - detected, not bound


@dataclass(frozen=True)
class NodeOptions:
    """How to run a node (from settings and flags, resolved by the CLI)."""

    data_dir: Path
    storage: int
    tracker_url: str
    host: str = "127.0.0.1"
    port: int = 7071
    control_port: int = 7072
    name: str = "node"
    public_address: str | None = None
    """the URL other nodes use to reach this one (default: https://HOST:PORT)"""
    encrypt: bool = False
    """encrypt uploads unless an upload request says otherwise"""
    tls: bool = True
    """serve the peer API over TLS with this node's certificate (off: plain HTTP, debugging)"""
    chunk_size: int = 4 << 20
    max_upload_rate: int | None = None
    """bytes per second sent at most (None: no cap)"""
    max_download_rate: int | None = None
    max_peers_served: int = 32
    scan_interval: float = 21600.0
    """seconds between integrity scans of the store"""
    limits: ServerLimits = field(default_factory=ServerLimits)
    """what the peer API bounds for each client (node/guard.py)"""


@dataclass(frozen=True)
class NodeReady:
    """What a started node tells its caller."""

    node_id: str
    name: str
    address: str
    control_url: str
    data_dir: Path


def _bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    raise RuntimeError("the server has no bound TCP address")


def _write_runtime(path: Path, ready: NodeReady) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    doc = {
        "node_id": ready.node_id,
        "name": ready.name,
        "address": ready.address,
        "control_url": ready.control_url,
        "pid": os.getpid(),
    }
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def read_runtime(data_dir: Path) -> dict[str, object] | None:
    """Return what a running node wrote about itself in ``data_dir`` (blocking), or None."""
    try:
        doc = json.loads((data_dir / RUNTIME_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


async def _expire_loop(store: FileChunkStore) -> None:
    while True:
        await asyncio.sleep(EXPIRE_EVERY)
        await store.expire()


async def run_node(
    opts: NodeOptions,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[NodeReady], None] | None = None,
) -> None:
    """Run a node until ``stop`` is set (the caller wires SIGINT/SIGTERM to it); then stop
    every task, close the servers and the store, and remove the runtime file.

    Raises :class:`~p2pshare.core.errors.StoreLocked` when another node runs on the data dir,
    and :class:`InvalidInput` when a port cannot be bound.
    """
    build_messages()  # now, not at the first request that uses each (core.messages.Message)
    if opts.host in WILDCARDS and not opts.public_address:
        raise InvalidInput(
            f"--host {opts.host} listens everywhere but says nothing of how others reach this "
            "node: give --public-address URL (e.g. http://192.168.1.11:7071)"
        )
    # direct I/O makes chunk writes take their disk time in worker threads: more of them than
    # asyncio's default (cores + 4), so a download's writes do not queue behind each other
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="node-io")
    )
    await asyncio.to_thread(opts.data_dir.mkdir, parents=True, exist_ok=True)
    keys = await asyncio.to_thread(load_or_create_identity, opts.data_dir)
    node_id = keys.node_id
    tls = await asyncio.to_thread(server_context, keys) if opts.tls else None
    store = await FileChunkStore.open(opts.data_dir, quota=opts.storage, exclusive=True)
    runners: list[web.AppRunner] = []
    runtime_file = opts.data_dir / RUNTIME_FILE
    try:
        up_limit = RateLimiter(opts.max_upload_rate)
        down_limit = RateLimiter(opts.max_download_rate)
        async with (
            new_session() as session,
            StreamPool(download=down_limit, upload=up_limit) as streams,
        ):
            tracker = TrackerClient(session, opts.tracker_url, signer=keys)
            reporter = ServedReporter(tracker, node_id)
            lost = LostReporter(tracker, node_id, store)

            guard = PeerGuard(opts.limits)
            peer_app = web.Application(
                middlewares=[problems_middleware, guard.middleware], client_max_size=JSON_BODY_LIMIT
            )
            peer_app[GUARD] = guard
            peer_api.add_routes(peer_app)
            peer_app[peer_api.STORE] = store
            peer_app[peer_api.REPLAYS] = ReplayGuard()
            peer_app[peer_api.UPLOAD_LIMIT] = up_limit
            peer_app[peer_api.DOWNLOAD_LIMIT] = down_limit
            peer_app[peer_api.SERVING] = asyncio.Semaphore(opts.max_peers_served)
            sent = peer_app[peer_api.SENT] = zerocopy.SentCounts()
            peer_app[peer_api.ON_ACK] = reporter.record
            peer_runner = web.AppRunner(peer_app, access_log=None, **guard.runner_options())
            await peer_runner.setup()
            guard.attach(peer_runner.server)
            runners.append(peer_runner)
            await _start_site(peer_runner, opts.host, opts.port, tls)
            address = _peer_address(opts, _bound_port(peer_runner), keys.fingerprint)
            identity = NodeIdentity(node_id, opts.name, address)
            peer_app[peer_api.IDENTITY] = identity

            ctx = NodeContext(
                store=store,
                identity=identity,
                tracker=tracker,
                peers=PeerClient(session, streams, signer=keys),
                data_dir=opts.data_dir,
                chunk_size=opts.chunk_size,
                encrypt=opts.encrypt,
            )
            manager = TransferManager(ctx, on_left=stop.set)
            repairs = repair_worker(ctx)
            audits = audit_worker(ctx)
            reclaims = reclaim_worker(ctx)
            control_app = web.Application(
                middlewares=[problems_middleware], client_max_size=JSON_BODY_LIMIT
            )
            control_api.add_routes(control_app)
            control_app[control_api.SERVICE] = manager
            control_runner = web.AppRunner(control_app, access_log=None)
            await control_runner.setup()
            runners.append(control_runner)
            await _start_site(control_runner, "127.0.0.1", opts.control_port)
            control_url = f"http://127.0.0.1:{_bound_port(control_runner)}"

            def announce() -> NodeAnnounce:
                return NodeAnnounce(
                    node_id=node_id,
                    name=opts.name,
                    address=identity.address,
                    offered_bytes=store.quota,
                    used_bytes=store.used_bytes,
                    free_bytes=store.free_bytes,
                )

            ready = NodeReady(node_id, opts.name, identity.address, control_url, opts.data_dir)
            await asyncio.to_thread(_write_runtime, runtime_file, ready)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(
                        heartbeat_loop(
                            tracker,
                            announce,
                            on_repairs=repairs.submit,
                            on_audits=audits.submit,
                            on_reclaim=lambda ids: reclaims.submit([ReclaimBatch(tuple(ids))]),
                        )
                    ),
                    tg.create_task(reclaims.run()),
                    tg.create_task(integrity_loop(store, lost, opts.scan_interval)),
                    tg.create_task(broken_refs_loop(store, lost)),
                    tg.create_task(lost.run()),
                    tg.create_task(repairs.run()),
                    tg.create_task(audits.run()),
                    tg.create_task(reporter.run()),
                    tg.create_task(manager.run()),
                    tg.create_task(_expire_loop(store)),
                ]
                log.info(
                    "node %s (%s) serving on %s, control on %s",
                    opts.name,
                    node_id,
                    identity.address,
                    control_url,
                )
                if on_ready is not None:
                    on_ready(ready)
                await stop.wait()
                log.info(
                    "node %s stopping; served %d chunks by sendfile, %d through the process;"
                    " pushed %d by sendfile, %d through the process",
                    opts.name,
                    sent.zero_copy,
                    sent.copied,
                    streams.pushed.zero_copy,
                    streams.pushed.copied,
                )
                if lost.waiting:
                    log.warning(
                        "%d lost chunks were not reported to the tracker (it did not answer);"
                        " they are reported when this node starts again",
                        lost.waiting,
                    )
                for task in tasks:
                    task.cancel()
            # the heartbeat is over: tell the tracker, so that no downloader is sent here for
            # the three heartbeats the silence would take to notice
            await _say_offline(tracker, node_id)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        await asyncio.to_thread(runtime_file.unlink, missing_ok=True)
        await store.close()


async def _say_offline(tracker: TrackerClient, node_id: str) -> None:
    """Tell the tracker this node stops, within OFFLINE_TIMEOUT; it notices anyway if not."""
    try:
        async with asyncio.timeout(OFFLINE_TIMEOUT):
            await tracker.offline(node_id)
    except P2PShareError as exc:
        log.info("could not tell the tracker this node stops: %s", exc.detail)
    except TimeoutError:
        log.info("could not tell the tracker this node stops: no answer in %g s", OFFLINE_TIMEOUT)
    else:
        log.info("told the tracker this node stops")


def _peer_address(opts: NodeOptions, port: int, fingerprint: str) -> str:
    """Return the address others reach this node at: with TLS, ``https://...#FINGERPRINT``."""
    scheme = "https" if opts.tls else "http"
    base = (opts.public_address or f"{scheme}://{opts.host}:{port}").rstrip("/")
    if not base.startswith(f"{scheme}://"):
        raise InvalidInput(
            f"--public-address {base} must start with {scheme}:// "
            f"(TLS is {'on' if opts.tls else 'off'})"
        )
    return f"{base}#{fingerprint}" if opts.tls else base


async def _start_site(
    runner: web.AppRunner, host: str, port: int, tls: ssl.SSLContext | None = None
) -> None:
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}") from None
