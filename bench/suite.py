"""The benchmark suite: every workload, our figure beside its anchors and its limit.

usage: python bench/suite.py [--smoke] [--only WORKLOAD[,WORKLOAD]] [--size 1GiB] [--rounds 3]
                             [--no-anchors] [--workdir DIR] [--out DIR]

Workloads (``--only`` takes these names; rows are named as in brackets):

  limits      what this machine allows [limit-tcp, limit-sha256, limit-disk]: loopback TCP
              (iperf3, one stream, 3 s), SHA-256 of this Python (hashlib, 4 MiB updates over
              ``--size`` in memory), ``--size`` written with fsync in the work dir.
  download-1  a ``--size`` file held by 3 nodes (uploaded once from h1 with ``--replicas 2``
              onto h2 and h3), downloaded by a fresh node with the real CLI; MB/s = size /
              the seconds the node reports. Anchors: libtorrent and aria2c from one seeder
              (``bench/anchors.py``). Limit: SHA-256.
  download-3  three fresh nodes download that file at once; MB/s = 3 x size / wall time from
              the first CLI start to the last exit. Anchors: three clients each.
  upload      a fresh node uploads ``--size`` of new random bytes with ``--replicas 2`` onto
              h2 and h3 (every chunk fsynced by its holder before its ack); MB/s = size / the
              seconds the node reports. Limit: disk write / 3 copies.
  tls         download-1 and upload again over TLS [download-1-tls, upload-tls]: a second
              network (tracker, h1-h3, fresh nodes) whose every connection is TLS with
              pinned certificates, the production setting; the rows above run over plain
              HTTP (``--no-tls``), as the BitTorrent anchors do (no encryption).
              download-1-tls shows download-1's anchors (not run again).
  encrypted   the same over the stack's private-file layer [upload-encrypted,
              download-1-encrypted], on the TLS network (the production defaults): ``upload
              --encrypt`` (AES-256-GCM per chunk) of a ``--size`` file onto h2 and h3, and a
              fresh node's download of it by its share link (decrypted and checked against the
              original).
  memory      peak RSS (VmHWM) of every node during the runs above and of the CLI, and of
              the downloading node in the 512 MiB and 4 GiB downloads of ``scaling``.
  tracker     a tracker alone with 200 files x 16 chunks x 3 replicas registered; 64 clients
              in a closed loop, signed announces then file-detail reads
              (``bench/tracker_load.py``), over plain HTTP (``--no-tls``) as the transfer rows
              and the anchor: opentracker with the same load generator speaking BitTorrent
              announces. [tracker-tls]: the same on a second tracker over TLS (the tracker's
              default; the client does not check the certificate), no anchor; a warm-up
              round of its own, as its process is new (its caches cold).
  scaling     download MB/s of 64 MiB, 512 MiB and 4 GiB [scaling-64m, ...], and the p50
              latency of file-detail reads (one client) with 100, 10k and 100k files
              registered [scaling-files-100, ...]; the files are written into the tracker's
              SQLite database before it starts, with its own migrations and table models in
              one transaction (10 ms per signed registration would make 100k take 17 min).

Every workload runs one discarded warm-up round (but ``tls`` and ``encrypted``, which follow
the same plain work on a warm machine), then ``--rounds`` rounds in which ours and
each anchor take turns (ours, anchor 1, anchor 2, ours, ...); rows report medians. Transfers
run among real processes of the test harness (``tests/integration/network/cluster.py``: a
tracker and nodes on loopback, plain or TLS as above), each download by a fresh node
that is stopped afterwards, so no run finds chunks already held. Writes
``bench/results/latest.json`` (``{"machine": ..., "rows": [...]}``) and ``latest.md``
(``partial.*`` with ``--only``, so a partial run does not replace the full one). A row's
``targets`` (``{"target": true | false | null}``, the table's last column) says which of the
issue's targets the run met: download-1 >= 1.5x libtorrent, download-3 >= 1.5x the best
client, upload >= 70% of disk / 3, tracker >= 5,000 announces/s with p99 < 50 ms, the largest
scaling file at least 90% of the next size's MB/s, file-detail p50 at the most files within
2x of the fewest, and memory's own two; null when a figure it needs is missing.

``--smoke``: 16 MiB files, 1 round, no warm-up, no anchors, no iperf3 (loopback TCP measured
by a Python socket pair instead), tracker loads of 1 s on 50 files, scaling at 16 and 32 MiB
and 100 files; writes ``bench/results/smoke.*`` and exits 1 unless every row it
wrote has numbers > 0. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from p2pshare.core.chunking import DEFAULT_CHUNK_SIZE
from p2pshare.core.errors import InvalidSize
from p2pshare.core.sizes import format_size, parse_size

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # the test harness
sys.path.insert(0, str(HERE))  # tracker_load, anchors
from tests.integration.network.cluster import (  # noqa: E402
    Cluster,
    Node,
    _clean_env,
    make_file,
    sha256,
)

import tracker_load  # noqa: E402
from anchors import fsync_seconds  # noqa: E402  (stdlib only: what the anchors use too)

MiB = 1 << 20
GiB = 1 << 30
MB = 1e6
NO_WARM_UP = "no warm-up round of its own (it follows the same plain work on a warm machine)"
WORKLOADS = (
    "limits",
    "download-1",
    "download-3",
    "upload",
    "tls",
    "encrypted",
    "memory",
    "tracker",
    "scaling",
)
RUN_ORDER = (
    "limits",
    "upload",
    "download-1",
    "download-3",
    "tls",
    "encrypted",
    "scaling",
    "tracker",
    "memory",
)
"""Memory is read off the other runs, so it comes last; upload and downloads before scaling,
so the holders' peaks are those of the ``--size`` runs."""
HOLDERS = ("h1", "h2", "h3")
CHUNK_SIZE = str(DEFAULT_CHUNK_SIZE)
"""Uploads use the default chunk size, as users do (the anchors keep their best piece size,
``anchors.PIECE_SIZE``)."""
TRACKER_CLIENTS = 64
TRACKER_FILES = (200, 16, 3)
"""files (50 in --smoke), chunks each, replicas each of the tracker workload"""
TRACKER_ROWS = ("tracker", "tracker-tls")
"""the tracker workload's rows: over plain HTTP (the target's), then over TLS"""
TRACKER_PLAIN_TRANSPORT = "plain HTTP (--no-tls), as opentracker and the transfer rows"
TRACKER_TLS_TRANSPORT = (
    "TLS (the tracker's default); the load generator does not verify the certificate"
)
SCALE_SHAPE = (4, 3, 8)
"""chunks per file, replicas per chunk, holder nodes of the scaling-files catalogues"""
NODE_TARGET_MIB = 150
GROWTH_TOLERANCE = 0.10
DOWNLOAD_ANCHORS = ("libtorrent", "aria2c")
DOWNLOAD_1_OVER_LIBTORRENT = 1.5
DOWNLOAD_3_OVER_BEST = 1.5
UPLOAD_OF_LIMIT = 0.7
TRACKER_ANNOUNCES = 5000
TRACKER_P99_MS = 50
SCALING_FLOOR = 0.9
"""MB/s of the largest file at least this share of the next size's (no slowdown with size)"""
FILES_P50_TIMES = 2.0


# --- plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to run and at which sizes (from the command line)."""

    smoke: bool
    workloads: tuple[str, ...]
    size: int
    rounds: int
    warmup: bool
    anchors: bool
    iperf: bool
    tracker_seconds: float
    files_seconds: float
    scaling_sizes: tuple[int, ...]
    file_counts: tuple[int, ...]
    memory_sizes: tuple[int, int]
    """the smaller and the larger download whose peaks are compared"""
    tracker_files: int = TRACKER_FILES[0]

    def rounds_list(self) -> list[int]:
        """Return the rounds to run: 0 is the discarded warm-up."""
        return ([0] if self.warmup else []) + list(range(1, self.rounds + 1))


def make_plan(args: argparse.Namespace) -> Plan:
    """Return the plan of the parsed command line; raise SystemExit for bad values."""
    only: list[str] = []
    for part in args.only or []:
        only += [w.strip() for w in part.split(",") if w.strip()]
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"--only: unknown workload {unknown[0]!r}; one of {', '.join(WORKLOADS)}")
    try:
        size = parse_size(args.size) if args.size else (16 * MiB if args.smoke else GiB)
    except InvalidSize as exc:
        raise SystemExit(f"--size: {exc.detail}") from None
    if size < MiB:
        raise SystemExit("--size: at least 1MiB")
    rounds = args.rounds if args.rounds is not None else (1 if args.smoke else 3)
    if not 1 <= rounds <= 50:
        raise SystemExit("--rounds: 1 to 50")
    workloads = tuple(w for w in RUN_ORDER if not only or w in only)
    if args.smoke:
        return Plan(
            smoke=True,
            workloads=workloads,
            size=size,
            rounds=rounds,
            warmup=False,
            anchors=False,
            iperf=False,
            tracker_seconds=1.0,
            files_seconds=0.5,
            scaling_sizes=(16 * MiB, 32 * MiB),
            file_counts=(100,),
            memory_sizes=(16 * MiB, 32 * MiB),
            tracker_files=50,
        )
    return Plan(
        smoke=False,
        workloads=workloads,
        size=size,
        rounds=rounds,
        warmup=True,
        anchors=not args.no_anchors,
        iperf=True,
        tracker_seconds=5.0,
        files_seconds=3.0,
        scaling_sizes=(64 * MiB, 512 * MiB, 4 * GiB),
        file_counts=(100, 10_000, 100_000),
        memory_sizes=(512 * MiB, 4 * GiB),
    )


def disk_needed(plan: Plan) -> int:
    """Return about how many bytes of free space the plan's work dir needs at its peak.

    Measured: the whole plan (1 GiB transfers, scaling and memory to 4 GiB) had 34.3 GiB in
    use at its peak: the largest file, on its uploader, its three holders and its downloader
    (5 copies), beside the copies of the 1 GiB files of the other rows and of the anchors."""
    sizes = [plan.size]
    if "scaling" in plan.workloads:
        sizes += plan.scaling_sizes
    if "memory" in plan.workloads:
        sizes += plan.memory_sizes
    return 5 * max(sizes) + 14 * plan.size


def size_tag(n: int) -> str:
    """Return ``64m``, ``4g``: the short name of a size in rows."""
    if n % GiB == 0:
        return f"{n // GiB}g"
    if n % MiB == 0:
        return f"{n // MiB}m"
    return f"{n}b"


def count_tag(n: int) -> str:
    """Return ``100``, ``10k``, ``100k``: the short name of a file count in rows."""
    return f"{n // 1000}k" if n >= 10_000 and n % 1000 == 0 else str(n)


def label(n: int) -> str:
    """Return a size as ``1GiB`` (no space: also a CLI argument)."""
    return format_size(n).replace(" ", "").replace(".0", "")


# --- machine facts ----------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """Return what this machine and this checkout are: CPU, cores, RAM, kernel, versions."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    packages: dict[str, str] = {}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        packages["p2pshare"] = importlib.metadata.version("p2pshare")
        for req in importlib.metadata.requires("p2pshare") or []:
            if "extra ==" in req:
                continue
            name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                packages[name] = importlib.metadata.version(name)
    git = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        git = {"commit": head, "modified_files": len(dirty.splitlines()) if dirty else 0}
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_bytes": ram,
        "ram": format_size(ram),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_build": sys.version.replace("\n", " "),
        "packages": packages,
        "git": git,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


# --- processes --------------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    """Return the peak resident set size (VmHWM) of a live process, in MiB (0 if gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """Return the user+system CPU seconds of a live process (0 if gone)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return tracker_load.cpu_seconds(pid)
    return 0.0


@dataclass
class CliRun:
    """One CLI run: its JSON document, when it started and ended, and its peak RSS."""

    doc: dict[str, Any]
    started: float
    ended: float
    rss_mib: float

    @property
    def wall(self) -> float:
        return self.ended - self.started


def run_cli(node: Node, *args: str, timeout: float = 3600) -> CliRun:
    """Run ``p2pshare --json ARGS --node URL``; raise RuntimeError unless it exits 0.

    The CLI's peak RSS is its VmHWM, read every 20 ms while it runs (the last reading before
    it exits). Not the rusage of ``wait4``: a child's ``ru_maxrss`` counts the memory of the
    process that forked it (this one) as well."""
    cmd = [sys.executable, "-m", "p2pshare", "--json", *args, "--node", node.control_url]
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=_clean_env())
        peak = [0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], peak_rss_mib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            proc.wait()
        finally:
            ended = time.perf_counter()
            timer.cancel()
            done.set()
            sampler.join()
        if proc.returncode != 0:
            err.seek(0)
            text = err.read().decode(errors="replace").strip()
            raise RuntimeError(
                f"p2pshare {args[0]} on {node.name} exited {proc.returncode}: {text}"
            )
        out.seek(0)
        doc = json.loads(out.read() or b"{}")
    return CliRun(doc, started, ended, peak[0])


@dataclass
class Shared:
    """A file registered once and held by h1, h2 and h3 (every chunk on all three)."""

    size: int
    file_id: str
    digest: str
    path: Path
    """the original bytes (the BitTorrent anchors seed it)"""
    tls: bool
    """held by the TLS network (else by the plain one)"""
    link: str | None = None
    """the share link of an encrypted upload (what its downloads ask for)"""


class Net:
    """A tracker and the holders h1, h2, h3 (test-harness processes), plus fresh nodes made
    for one run each and stopped after it; every process over TLS with pinned certificates
    (``tls``, the production setting) or over plain HTTP (``--no-tls``)."""

    def __init__(self, root: Path, storage: int, *, tls: bool) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.storage = str(storage)  # bytes: the CLI takes plain numbers
        self.tls = tls
        self.mode: tuple[str, ...] = () if tls else ("--no-tls",)
        self.c = Cluster(root)
        self.shared: dict[tuple[int, bool], Shared] = {}
        self.names: dict[str, str] = {}
        """node id -> name, of every node started (stopped ones too)"""
        self._seq = 0
        try:
            # audits, repairs of downloaders stopped after their run: off for the run; the
            # heartbeat is the default one, as users run it (the tests' 1 s cost the tracker
            # and every node an announce each second, and the tracker a repair round)
            self.c.start_tracker(
                "--audit-interval", "86400", "--repair-grace", "86400", *self.mode, heartbeat=None
            )
            with ThreadPoolExecutor(len(HOLDERS)) as pool:
                list(pool.map(lambda n: self.c.start_node(n, self.storage, *self.mode), HOLDERS))
            self.wait_online([self.c.nodes[h] for h in HOLDERS])
            self.names.update({self.c.nodes[h].node_id: h for h in HOLDERS})
        except BaseException:
            self.c.close()
            raise

    @property
    def holders(self) -> list[Node]:
        return [self.c.nodes[h] for h in HOLDERS]

    def wait_online(self, nodes: list[Node], timeout: float = 30.0) -> None:
        """Wait until the tracker lists exactly ``nodes`` as online (stopped ones gone)."""
        want = {n.node_id for n in nodes}
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            items = self.c.get("/v1/nodes", online="true", limit=500)["items"]
            seen = {n["node_id"] for n in items}
            if seen == want:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the tracker lists {len(seen)} online nodes, not the {len(want)}")

    def fresh(self, prefix: str, count: int) -> list[Node]:
        """Start ``count`` new nodes (``prefix`` + a number) and wait until only they and the
        holders are online."""
        names = []
        for _ in range(count):
            self._seq += 1
            names.append(f"{prefix}{self._seq}")
        with ThreadPoolExecutor(count) as pool:
            nodes = list(pool.map(lambda n: self.c.start_node(n, self.storage, *self.mode), names))
        self.names.update({n.node_id: n.name for n in nodes})
        self.wait_online(self.holders + nodes)
        return nodes

    def stop(self, nodes: list[Node]) -> None:
        """Stop ``nodes`` and delete their data."""
        for n in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
                self.c.kill(n.name, signal.SIGTERM)
            self.c.nodes.pop(n.name, None)
            shutil.rmtree(n.data_dir, ignore_errors=True)

    def upload_args(self, path: Path, size: int, *, encrypt: bool = False) -> list[str]:
        """Return the CLI arguments of an upload of ``path`` onto h2 and h3 (2 replicas)."""
        budget = str(size + 64 * MiB)
        return [
            "upload",
            str(path),
            "--alloc",
            f"h2={budget}",
            "--alloc",
            f"h3={budget}",
            "--replicas",
            "2",
            "--encrypt" if encrypt else "--no-encrypt",
            "--chunk-size",
            CHUNK_SIZE,
        ]

    def share(self, size: int, *, encrypt: bool = False) -> Shared:
        """Return the file of ``size`` held by h1, h2 and h3 (uploaded from h1 on first use;
        ``encrypt``: another file, uploaded encrypted)."""
        key = (size, encrypt)
        if key in self.shared:
            return self.shared[key]
        path = self.root / f"shared-{label(size)}{'-encrypted' if encrypt else ''}.bin"
        digest = make_file(path, size)
        fsync_seconds(path)  # its dirty pages are not written during a timed run
        run = run_cli(self.c.nodes["h1"], *self.upload_args(path, size, encrypt=encrypt))
        fid = str(run.doc["file_id"])
        detail = self.c.get(f"/v1/files/{fid}")
        thin = [c["index"] for c in detail["chunks"] if len(c["holders"]) < len(HOLDERS)]
        if run.doc.get("sha256") != digest or thin:
            raise RuntimeError(f"the shared {label(size)} file is not on 3 holders: {thin[:5]}")
        print(
            f"  (set-up: {label(size)}{' encrypted' if encrypt else ''} uploaded from h1 onto "
            f"h2, h3 in {run.doc['seconds']:.1f} s)",
            flush=True,
        )
        link = str(run.doc["share_link"]) if encrypt else None
        self.shared[key] = Shared(size, fid, digest, path, self.tls, link)
        return self.shared[key]

    def close(self) -> None:
        self.c.close()


# --- memory -----------------------------------------------------------------------------------


@dataclass
class Memory:
    """Peak RSS seen in the runs, in MiB."""

    nodes: dict[str, float] = field(default_factory=dict)
    """``--size`` runs: the max per node (role) over the runs"""
    cli: float = 0.0
    by_download: dict[int, list[float]] = field(default_factory=dict)
    """file size -> the downloading node's peak in each download of that size"""
    after_scaling: dict[str, float] = field(default_factory=dict)

    def node(self, name: str, mib: float) -> None:
        self.nodes[name] = max(self.nodes.get(name, 0.0), mib)


# --- anchors ----------------------------------------------------------------------------------


class Anchors:
    """``bench/anchors.py``, imported on first use; any failure is kept as text, never raised."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.error: str | None = None if enabled else "anchors off (--no-anchors)"
        self._module: Any = None
        self.tools: dict[str, str | None] = {}

    def module(self) -> Any:
        """Return the module, or None (see :attr:`error`)."""
        if self._module is None and self.error is None:
            try:
                self._module = importlib.import_module("anchors")
                self.tools = dict(self._module.ensure_tools())
            except Exception as exc:
                self.error = f"bench/anchors.py: {type(exc).__name__}: {exc}"[:500]
                self._module = None
        return self._module


def anchor_error(exc: BaseException) -> str:
    """Return the first line of an error, with its type, at most 500 characters."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500]


# --- the suite --------------------------------------------------------------------------------

Row = dict[str, Any]
Contender = Callable[[], float]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def rounded(value: Any) -> Any:
    """Return ``value`` with floats at 4 significant digits (recursively)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


class Suite:
    """Runs the workloads of a :class:`Plan` in a work dir and collects their rows."""

    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.rows: dict[str, Row] = {}
        self.limits: dict[str, float] = {}
        self.memory = Memory()
        self.anchors = Anchors(plan.anchors)
        self.failed: list[str] = []
        self._nets: dict[bool, Net] = {}
        self._net_errors: dict[bool, BaseException] = {}
        self._stack = contextlib.ExitStack()
        self._swarms: dict[Path, Any] = {}
        self._swarm_errors: dict[Path, str] = {}

    # -- running ------------------------------------------------------------------------------

    def run(self) -> None:
        """Run every planned workload; a failing one becomes a row with ``error``."""
        print_header()
        try:
            for name in self.plan.workloads:
                started = time.perf_counter()
                try:
                    getattr(self, "w_" + name.replace("-", "_"))()
                except Exception as exc:
                    traceback.print_exc()
                    self.failed.append(name)
                    self.add(
                        {
                            "workload": name,
                            "unit": "",
                            "ours": None,
                            "runs": [],
                            "anchors": {},
                            "limit": None,
                            "error": anchor_error(exc),
                        }
                    )
                print(f"  ({name}: {time.perf_counter() - started:.0f} s)", flush=True)
        finally:
            self.close()

    def close(self) -> None:
        self._stack.close()
        self._swarms.clear()
        for net in self._nets.values():
            net.close()
        self._nets.clear()

    @property
    def net(self) -> Net:
        """Return the plain transfer network (the rows compared with BitTorrent, which runs
        unencrypted too), started on first use."""
        return self.network(tls=False)

    def network(self, *, tls: bool) -> Net:
        """Return the TLS or the plain transfer network, started on first use together with
        the other one when the plan uses both (their start-ups overlap; no round is running
        then); a failed start is not retried."""
        if tls not in self._nets and tls not in self._net_errors:
            uses = self.plan.workloads
            plain = ("upload", "download-1", "download-3", "scaling", "memory")
            other = any(w in uses for w in (plain if tls else ("tls", "encrypted")))
            done = self._nets.keys() | self._net_errors.keys()
            wanted = [tls] + ([not tls] if other and (not tls) not in done else [])
            with ThreadPoolExecutor(len(wanted)) as pool:
                started = {t: pool.submit(self._start_net, t) for t in wanted}
            for t, future in started.items():
                try:
                    self._nets[t] = future.result()
                except Exception as exc:
                    self._net_errors[t] = exc
        if tls in self._net_errors:
            raise RuntimeError(f"the transfer network did not start: {self._net_errors[tls]}")
        return self._nets[tls]

    def _start_net(self, tls: bool) -> Net:
        if tls:  # download-1-tls, upload-tls and the encrypted rows
            total = 3 * self.plan.size
        else:
            total = self.plan.size * (3 if "upload" in self.plan.workloads else 1)
            total += sum(self.plan.scaling_sizes) + sum(self.plan.memory_sizes)
        return Net(self.work / ("net-tls" if tls else "net"), 2 * total + GiB, tls=tls)

    def add(self, row: Row) -> None:
        """Keep ``row`` and print it as a line of the table."""
        row = rounded({**row, "load_average_1m": os.getloadavg()[0]})
        self.rows[row["workload"]] = row
        print_row(row)

    def interleave(
        self,
        title: str,
        ours: Contender,
        anchors: dict[str, Contender | None],
        unit: str,
        *,
        warm_up: bool = True,
    ) -> tuple[list[float], dict[str, list[float]], dict[str, str]]:
        """Run the warm-up (unless not ``warm_up``) and the rounds, ours then each anchor in
        turn; return our values, each anchor's values and each failed anchor's error (it is
        not run again)."""
        values: list[float] = []
        anchor_values: dict[str, list[float]] = {name: [] for name in anchors}
        errors: dict[str, str] = {}
        for name, fn in anchors.items():
            if fn is None:
                errors[name] = self.anchors.error or "not available"
        for rnd in self.plan.rounds_list():
            if rnd == 0 and not warm_up:
                continue
            tag = "warm-up" if rnd == 0 else f"round {rnd}"
            value = ours()
            print(f"    {title:<18} {tag:<8} ours {value:10.1f} {unit}", flush=True)
            if rnd:
                values.append(value)
            for name, fn in anchors.items():
                if fn is None or name in errors:
                    continue
                try:
                    value = fn()
                except Exception as exc:
                    errors[name] = anchor_error(exc)
                    print(f"    {title:<18} {tag:<8} {name}: failed: {errors[name]}", flush=True)
                    continue
                print(f"    {title:<18} {tag:<8} {name} {value:10.1f} {unit}", flush=True)
                if rnd:
                    anchor_values[name].append(value)
        return values, anchor_values, errors

    @staticmethod
    def anchor_cells(
        anchor_values: dict[str, list[float]], errors: dict[str, str]
    ) -> dict[str, Any]:
        """Return the ``anchors``, ``anchor_runs`` and ``anchor_errors`` keys of a row."""
        cells: dict[str, Any] = {
            "anchors": {
                name: (None if name in errors and not vals else median(vals))
                for name, vals in anchor_values.items()
            },
            "anchor_runs": {name: vals for name, vals in anchor_values.items() if vals},
        }
        if errors:
            cells["anchor_errors"] = errors
        return cells

    # -- limits ---------------------------------------------------------------------------------

    def limit(self, name: str) -> float | None:
        """Return the median of limit ``name`` (``sha256`` or ``disk``), measuring it once
        now when the limits workload did not run."""
        if name not in self.limits:
            with contextlib.suppress(Exception):
                fn = {"sha256": self.sha256_rate, "disk": self.disk_rate}[name]
                self.limits[name] = fn()
        return self.limits.get(name)

    def sha256_rate(self) -> float:
        """Return MB/s of hashlib SHA-256 over ``--size`` in memory, 4 MiB per update (4 MiB
        of random bytes repeated: the speed of SHA-256 does not depend on the bytes; freed
        after, so this process stays small)."""
        block = os.urandom(4 * MiB)
        whole, rest = divmod(self.plan.size, len(block))
        data = block * whole + block[:rest]
        view = memoryview(data)
        step = len(block)
        digest = hashlib.sha256()
        started = time.perf_counter()
        for start in range(0, len(data), step):
            digest.update(view[start : start + step])
        digest.hexdigest()
        seconds = time.perf_counter() - started
        view.release()
        del data
        return self.plan.size / MB / seconds

    def disk_rate(self) -> float:
        """Return MB/s of writing ``--size`` in 4 MiB blocks then fsync, in the work dir."""
        path = self.work / "disk-limit.bin"
        block = os.urandom(4 * MiB)
        os.sync()
        started = time.perf_counter()
        with path.open("wb", buffering=0) as fh:
            left = self.plan.size
            while left > 0:
                n = fh.write(block[: min(left, len(block))])
                left -= n or 0
            os.fsync(fh.fileno())
        seconds = time.perf_counter() - started
        path.unlink()
        return self.plan.size / MB / seconds

    def tcp_rate(self) -> float:
        """Return MB/s of one loopback TCP stream: iperf3 for 3 s, or in --smoke a Python
        socket pair for 0.5 s."""
        if not self.plan.iperf:
            return python_tcp_rate(0.5)
        port = free_port()
        server = subprocess.Popen(
            ["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(50):
                proc = subprocess.run(
                    ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "3", "-J"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                doc = json.loads(proc.stdout or "{}")
                if proc.returncode == 0 and "error" not in doc:
                    return float(doc["end"]["sum_received"]["bits_per_second"]) / 8 / MB
                time.sleep(0.1)  # the server was not listening yet
            raise RuntimeError(f"iperf3 failed: {doc.get('error') or proc.stderr}")
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=5)
            if server.poll() is None:
                server.kill()
                server.wait()

    def w_limits(self) -> None:
        measures: dict[str, tuple[Callable[[], float], str]] = {
            "tcp": (self.tcp_rate, "one loopback TCP stream to 127.0.0.1"),
            "sha256": (self.sha256_rate, "hashlib SHA-256, 4 MiB updates, in memory"),
            "disk": (self.disk_rate, "write + fsync in the work dir"),
        }
        method = {"tcp": "iperf3 -t 3" if self.plan.iperf else "python socket pair, 0.5 s"}
        if self.plan.iperf and shutil.which("iperf3") is None:
            install_iperf3()
        runs: dict[str, list[float]] = {k: [] for k in measures}
        errors: dict[str, str] = {}
        for rnd in self.plan.rounds_list():
            for key, (fn, _) in measures.items():
                if key in errors:
                    continue
                try:
                    value = fn()
                except Exception as exc:
                    errors[key] = anchor_error(exc)
                    continue
                if rnd:
                    runs[key].append(value)
        for key, (_, what) in measures.items():
            value = median(runs[key])
            if value is not None:
                self.limits[key] = value
            row: Row = {
                "workload": f"limit-{key}",
                "unit": "MB/s",
                "ours": value,
                "runs": runs[key],
                "anchors": {},
                "limit": None,
                "what": what,
                "bytes": self.plan.size if key != "tcp" else None,
            }
            if key in method:
                row["method"] = method[key]
            if key in errors:
                row["error"] = errors[key]
            self.add(row)

    # -- transfers ------------------------------------------------------------------------------

    def download(self, shared: Shared, count: int, role: str | None) -> dict[str, Any]:
        """Download ``shared`` on ``count`` fresh nodes at once; check every copy; return the
        node-reported seconds, the wall time (first CLI start to last exit) and peaks.

        The downloaders' peaks count as ``role``'s in the ``--size`` runs; with no role (the
        scaling runs) they count as the peak of a download of that file size."""
        net = self.network(tls=shared.tls)
        nodes = net.fresh("d", count)
        outs = [self.work / "out" / f"{n.name}.bin" for n in nodes]
        outs[0].parent.mkdir(exist_ok=True)
        try:
            os.sync()
            with ThreadPoolExecutor(count) as pool:
                futures = [
                    pool.submit(
                        run_cli, n, "download", shared.link or shared.file_id, "-o", str(out)
                    )
                    for n, out in zip(nodes, outs, strict=True)
                ]
                runs = [f.result() for f in futures]
            peaks = {n.name: peak_rss_mib(n.proc.popen.pid) for n in nodes}
            for run, out in zip(runs, outs, strict=True):
                if run.doc.get("sha256") != shared.digest or sha256(out) != shared.digest:
                    raise RuntimeError(f"{out.name}: the downloaded copy differs")
        finally:
            net.stop(nodes)
            for out in outs:
                out.unlink(missing_ok=True)
        if role is None:
            self.memory.by_download.setdefault(shared.size, []).extend(peaks.values())
        else:
            for run in runs:
                self.memory.cli = max(self.memory.cli, run.rss_mib)
            for mib in peaks.values():
                self.memory.node(role, mib)
        sources: dict[str, int] = {}
        for run in runs:
            for s in run.doc.get("sources", []):
                who = net.names.get(str(s.get("node_id")), str(s.get("name")))
                sources[who] = sources.get(who, 0) + int(s.get("chunks", 0))
        return {
            "node_s": [float(r.doc["seconds"]) for r in runs],
            "cli_s": [r.wall for r in runs],
            "wall_s": max(r.ended for r in runs) - min(r.started for r in runs),
            "peaks": list(peaks.values()),
            "sources": sources,
        }

    def holder_peaks(self) -> None:
        """Record the holders' peaks so far (and the trackers'), of both networks."""
        for net in self._nets.values():
            for n in net.holders:
                self.memory.node(n.name, peak_rss_mib(n.proc.popen.pid))
            tracker = net.c.tracker
            if tracker is not None:
                self.memory.node("tracker", peak_rss_mib(tracker.popen.pid))

    def swarm(self, shared: Shared) -> Any:
        """Return the BitTorrent swarm seeding ``shared`` (made on first use), or None."""
        if shared.path in self._swarms:
            return self._swarms[shared.path]
        if shared.path in self._swarm_errors:
            return None
        mod = self.anchors.module()
        if mod is None:
            return None
        try:
            workdir = self.work / f"bt-{label(shared.size)}"
            workdir.mkdir(exist_ok=True)
            swarm = self._stack.enter_context(mod.BtSwarm(shared.path, workdir))
        except Exception as exc:
            self._swarm_errors[shared.path] = anchor_error(exc)
            print(f"    BitTorrent swarm failed: {self._swarm_errors[shared.path]}", flush=True)
            return None
        self._swarms[shared.path] = swarm
        return swarm

    def download_anchors(
        self, shared: Shared, count: int, durable: dict[str, list[float]] | None = None
    ) -> dict[str, Contender | None]:
        """Return libtorrent and aria2c downloading ``shared`` (``count`` clients at once), MB/s
        as ours is counted (1: size / seconds; more: count x size / the slowest). Each run's
        MB/s to durable copies (``BtSwarm.last_durable``) is appended to ``durable[name]``."""
        if not self.plan.anchors:
            return {}
        swarm = self.swarm(shared)

        def client(name: str) -> Contender:
            def run() -> float:
                seconds = swarm.download(name, count)
                if len(seconds) != count or min(seconds) <= 0:
                    raise RuntimeError(f"{name}: {count} clients reported {seconds}")
                flushed = swarm.last_durable
                if durable is not None and len(flushed) == count and min(flushed) > 0:
                    durable.setdefault(name, []).append(count * shared.size / MB / max(flushed))
                return count * shared.size / MB / max(seconds)

            return run

        return {name: client(name) if swarm is not None else None for name in DOWNLOAD_ANCHORS}

    def anchor_swarm_error(self, shared: Shared) -> str | None:
        return self._swarm_errors.get(shared.path) or self.anchors.error

    def w_download_1(self) -> None:
        shared = self.net.share(self.plan.size)
        extra: dict[str, list[float]] = {"cli_s": [], "node_s": []}
        last: dict[str, Any] = {}

        def ours() -> float:
            got = self.download(shared, 1, "downloader (download-1)")
            extra["cli_s"].append(got["cli_s"][0])
            extra["node_s"].append(got["node_s"][0])
            last.update(got)
            return shared.size / MB / got["node_s"][0]

        durable: dict[str, list[float]] = {}
        anchors = self.download_anchors(shared, 1, durable)
        values, anchor_values, errors = self.interleave("download-1", ours, anchors, "MB/s")
        self.holder_peaks()
        n = len(values)
        self.add(
            {
                "workload": "download-1",
                "unit": "MB/s",
                "ours": median(values),
                "runs": values,
                **self.anchor_cells(anchor_values, self.errors_of(anchors, errors, shared)),
                "limit": self.limit_cell("sha256"),
                "bytes": shared.size,
                "node_seconds": extra["node_s"][-n:],
                "cli_wall_seconds": extra["cli_s"][-n:],
                "cli_wall_mb_s": median([shared.size / MB / s for s in extra["cli_s"][-n:]]),
                "holders": 3,
                "sources_last_run": last.get("sources", {}),
                "anchors_durable": durable_medians(durable, anchor_values),
            }
        )

    def w_download_3(self) -> None:
        shared = self.net.share(self.plan.size)
        extra: dict[str, list[Any]] = {"wall_s": [], "node_s": [], "sources": []}

        def ours() -> float:
            got = self.download(shared, 3, "downloaders (download-3)")
            extra["wall_s"].append(got["wall_s"])
            extra["node_s"].append(got["node_s"])
            extra["sources"].append(got["sources"])
            return 3 * shared.size / MB / got["wall_s"]

        durable: dict[str, list[float]] = {}
        anchors = self.download_anchors(shared, 3, durable)
        values, anchor_values, errors = self.interleave("download-3", ours, anchors, "MB/s")
        self.holder_peaks()
        n = len(values)
        self.add(
            {
                "workload": "download-3",
                "unit": "MB/s",
                "ours": median(values),
                "runs": values,
                **self.anchor_cells(anchor_values, self.errors_of(anchors, errors, shared)),
                "limit": None,
                "bytes": shared.size,
                "clients": 3,
                "wall_seconds": extra["wall_s"][-n:],
                "node_seconds": extra["node_s"][-n:],
                "sources_last_run": extra["sources"][-1] if extra["sources"] else {},
                "anchors_durable": durable_medians(durable, anchor_values),
            }
        )

    def errors_of(
        self, anchors: dict[str, Contender | None], errors: dict[str, str], shared: Shared
    ) -> dict[str, str]:
        """Return the errors of a row's anchors, naming the swarm's failure where it was it."""
        out = dict(errors)
        for name, fn in anchors.items():
            if fn is None:
                out[name] = self.anchor_swarm_error(shared) or "not available"
        return out

    def limit_cell(self, name: str, divide: int = 1) -> dict[str, Any] | None:
        value = self.limit(name)
        if value is None:
            return None
        return {"name": name if divide == 1 else f"{name} / {divide}", "value": value / divide}

    def upload_once(self, role: str, *, encrypt: bool = False, tls: bool = False) -> CliRun:
        """Upload ``--size`` of new random bytes from a fresh node onto h2 and h3 (of the TLS
        or the plain network), read the node's peak (as ``role``'s), withdraw the file (its
        holders reclaim the space) and stop the node."""
        net = self.network(tls=tls)
        size = self.plan.size
        node = net.fresh("u", 1)[0]
        src = self.work / f"upload-{node.name}.bin"
        try:
            digest = make_file(src, size)
            fsync_seconds(src)
            os.sync()
            run = run_cli(node, *net.upload_args(src, size, encrypt=encrypt))
            if run.doc.get("sha256") != digest:
                raise RuntimeError("the upload registered other bytes")
            self.memory.node(role, peak_rss_mib(node.proc.popen.pid))
            self.memory.cli = max(self.memory.cli, run.rss_mib)
            run_cli(node, "delete", str(run.doc["file_id"]), "--yes")
        finally:
            net.stop([node])
            src.unlink(missing_ok=True)
        return run

    def w_upload(self) -> None:
        size = self.plan.size
        extra: dict[str, list[float]] = {"cli_s": []}

        def ours() -> float:
            run = self.upload_once("uploader (upload)")
            extra["cli_s"].append(run.wall)
            return size / MB / float(run.doc["seconds"])

        values, _, _ = self.interleave("upload", ours, {}, "MB/s")
        self.holder_peaks()
        n = len(values)
        self.add(
            {
                "workload": "upload",
                "unit": "MB/s",
                "ours": median(values),
                "runs": values,
                "anchors": {},
                "limit": self.limit_cell("disk", 3),
                "bytes": size,
                "replicas": 2,
                "copies_written": 3,
                "cli_wall_seconds": extra["cli_s"][-n:],
            }
        )

    def w_tls(self) -> None:
        """Rows download-1-tls and upload-tls: download-1 and upload on the TLS network (the
        production setting: every connection between nodes over TLS with pinned
        certificates). The anchors are download-1's (same file size, same machine, same run),
        not run again. No warm-up of their own, like the encrypted rows."""
        shared = self.network(tls=True).share(self.plan.size)
        anchors = dict(self.rows.get("download-1", {}).get("anchors", {}))
        note = "anchors: download-1's, not run again; " + NO_WARM_UP
        self.tls_download("download-1-tls", shared, anchors, note)
        self.tls_upload("upload-tls", encrypt=False)
        self.holder_peaks()

    def w_encrypted(self) -> None:
        """Rows upload-encrypted and download-1-encrypted, on the TLS network (encrypted files
        over TLS: the production defaults; no anchors: BitTorrent has no encrypted files to
        compare with). They run right after the plain upload and downloads, the same work on a
        machine already warm, so without a warm-up of their own: that keeps ``make bench``
        under its 20 minutes on a slow day (it took 21 with them)."""
        self.tls_upload("upload-encrypted", encrypt=True)
        shared = self.network(tls=True).share(self.plan.size, encrypt=True)
        self.tls_download("download-1-encrypted", shared, {}, NO_WARM_UP)

    def tls_upload(self, workload: str, *, encrypt: bool) -> None:
        """Row ``workload``: the upload's rounds on the TLS network, without a warm-up."""
        size = self.plan.size

        def upload() -> float:
            run = self.upload_once(f"uploader ({workload})", encrypt=encrypt, tls=True)
            return size / MB / float(run.doc["seconds"])

        values, _, _ = self.interleave(workload, upload, {}, "MB/s", warm_up=False)
        self.add(
            {
                "workload": workload,
                "unit": "MB/s",
                "ours": median(values),
                "runs": values,
                "anchors": {},
                "limit": self.limit_cell("disk", 3),
                "bytes": size,
                "replicas": 2,
                "note": NO_WARM_UP,
            }
        )

    def tls_download(
        self, workload: str, shared: Shared, anchors: dict[str, Any], note: str
    ) -> None:
        """Row ``workload``: download-1's rounds of ``shared`` (held by the TLS network),
        without a warm-up; ``anchors`` shown beside it."""
        seconds: list[float] = []

        def download() -> float:
            got = self.download(shared, 1, f"downloader ({workload})")
            seconds.append(got["node_s"][0])
            return shared.size / MB / got["node_s"][0]

        values, _, _ = self.interleave(workload, download, {}, "MB/s", warm_up=False)
        self.add(
            {
                "workload": workload,
                "unit": "MB/s",
                "ours": median(values),
                "runs": values,
                "anchors": anchors,
                "limit": self.limit_cell("sha256"),
                "bytes": shared.size,
                "node_seconds": seconds[-len(values) :],
                "holders": 3,
                "note": note,
            }
        )

    # -- memory ---------------------------------------------------------------------------------

    def w_memory(self) -> None:
        small, large = self.plan.memory_sizes
        if not self.memory.nodes:  # --only memory: one run of each, to read the peaks off
            print("    (memory alone: one upload, download-1 and download-3 run)", flush=True)
            self.upload_once("uploader (upload)")
            shared = self.net.share(self.plan.size)
            self.download(shared, 1, "downloader (download-1)")
            self.download(shared, 3, "downloaders (download-3)")
            self.holder_peaks()
        for n in (small, large):
            if n not in self.memory.by_download:
                self.download(self.net.share(n), 1, None)
        nodes = {k: v for k, v in self.memory.nodes.items() if "(" in k or k in HOLDERS}
        ours = max(nodes.values()) if nodes else None
        small_peak = max(self.memory.by_download[small])
        large_peak = max(self.memory.by_download[large])
        growth = large_peak / small_peak - 1 if small_peak else None
        over = sorted(k for k, v in nodes.items() if v >= NODE_TARGET_MIB)
        self.add(
            {
                "workload": "memory",
                "unit": "MiB",
                "ours": ours,
                "runs": sorted(nodes.values()),
                "anchors": {},
                "limit": None,
                "per_node": nodes,
                "tracker_mib": self.memory.nodes.get("tracker"),
                "cli_mib": self.memory.cli,
                "size_runs_bytes": self.plan.size,
                "download_peak_mib": {
                    label(small): small_peak,
                    label(large): large_peak,
                },
                "download_growth": growth,
                "holders_after_scaling_mib": self.memory.after_scaling,
                "targets": {
                    f"every node < {NODE_TARGET_MIB} MiB": not over and ours is not None,
                    f"no growth {label(small)} -> {label(large)} "
                    f"(within {GROWTH_TOLERANCE:.0%})": growth is not None
                    and growth <= GROWTH_TOLERANCE,
                },
                "nodes_over_target": over,
            }
        )

    # -- tracker --------------------------------------------------------------------------------

    def w_tracker(self) -> None:
        """Rows tracker (plain HTTP, as opentracker and the transfer rows are; the target's row)
        and tracker-tls (the tracker's default, TLS; no anchor): the same load on each, each
        tracker a new process with a warm-up round of its own (a cold one read file details
        at 690/s with a p99 of 1.8 s in its first round here, against about 1,800/s and 63 ms
        warm)."""
        plain, tls = TRACKER_ROWS
        self.tracker_row(plain, tls=False)
        self.tracker_row(tls, tls=True)

    def tracker_row(self, workload: str, *, tls: bool) -> None:
        """Load a fresh tracker (TLS or not) with announces then file-detail reads, rounds as
        everywhere; opentracker's announces in turn with the plain one."""
        _, chunks, replicas = TRACKER_FILES
        files = self.plan.tracker_files
        root = self.work / workload
        root.mkdir()
        c = Cluster(root)
        try:
            url = c.start_tracker(
                "--audit-interval",
                "86400",
                "--repair-grace",
                "86400",
                *(() if tls else ("--no-tls",)),
                heartbeat=30.0,
            )
            assert c.tracker is not None
            pid = c.tracker.popen.pid
            keys = tracker_load.node_keys(TRACKER_CLIENTS)
            ids = [k.node_id for k in keys]
            regs = [tracker_load.registration(f, chunks, ids, replicas) for f in range(files)]

            async def setup() -> float:
                async with tracker_load.new_session(16) as session:
                    await tracker_load.announce_all(session, url, keys)
                    t0 = time.perf_counter()
                    await tracker_load.register_all(session, url, regs, keys[0], parallel=1)
                    return time.perf_counter() - t0

            register_s = asyncio.run(setup())
            ids_file = root / "file-ids.txt"
            ids_file.write_text("\n".join(r.manifest.file_id for r in regs) + "\n")
            seconds = self.plan.tracker_seconds
            detail: list[dict[str, Any]] = []
            announce: list[dict[str, Any]] = []

            def measured(kind: str) -> dict[str, Any]:
                got = tracker_load.load(
                    url,
                    seconds,
                    TRACKER_CLIENTS,
                    kind=kind,
                    protocol="p2pshare",
                    ids_file=ids_file,
                    cpu_pid=pid,
                )
                if got.get("errors"):
                    raise RuntimeError(f"{kind}: {got['errors']} errors: {got.get('first_error')}")
                return got

            def ours() -> float:
                announce.append(measured("announce"))
                detail.append(measured("detail"))
                return float(announce[-1]["rps"])

            anchors: dict[str, Contender | None] = {}
            opentracker: list[dict[str, Any]] = []
            if self.plan.anchors and not tls:
                mod = self.anchors.module()

                def run_load(prefix: list[str], url: str) -> dict[str, Any]:
                    return tracker_load.load(
                        url,
                        seconds,
                        TRACKER_CLIENTS,
                        kind="announce",
                        protocol="bittorrent",
                        prefix=prefix,
                    )

                def anchor() -> float:
                    got = mod.opentracker_rate(
                        run_load,
                        seconds,
                        TRACKER_CLIENTS,
                        info_hashes=[tracker_load.BENCH_INFO_HASH],
                    )
                    if got.get("errors"):
                        raise RuntimeError(f"{got['errors']} errors: {got.get('first_error')}")
                    opentracker.append(dict(got))
                    return float(got["rps"])

                anchors["opentracker"] = anchor if mod is not None else None
            values, anchor_values, errors = self.interleave(workload, ours, anchors, "req/s")
        finally:
            c.close()
        n = len(values)
        a, d = announce[-n:], detail[-n:]
        self.add(
            {
                "workload": workload,
                "unit": "announces/s",
                "ours": median(values),
                "runs": values,
                **self.anchor_cells(anchor_values, errors),
                "limit": None,
                "p50_ms": median([x["p50_ms"] for x in a]),
                "p99_ms": median([x["p99_ms"] for x in a]),
                "detail_rps": median([x["rps"] for x in d]),
                "detail_runs": [x["rps"] for x in d],
                "detail_p50_ms": median([x["p50_ms"] for x in d]),
                "detail_p99_ms": median([x["p99_ms"] for x in d]),
                "anchor_p50_ms": {"opentracker": median([x["p50_ms"] for x in opentracker[-n:]])}
                if opentracker
                else {},
                "anchor_p99_ms": {"opentracker": median([x["p99_ms"] for x in opentracker[-n:]])}
                if opentracker
                else {},
                "tracker_cpu_cores": median([x["server_cpu_cores"] for x in a]),
                "tracker_cpu_us_per_announce": median(
                    [x["server_cpu_cores"] / x["rps"] * 1e6 for x in a]
                ),
                "detail_tracker_cpu_cores": median([x["server_cpu_cores"] for x in d]),
                "client_cpu_cores": median([x["client_cpu_cores"] for x in a]),
                "anchor_client_cpu_cores": {
                    "opentracker": median([x["client_cpu_cores"] for x in opentracker[-n:]])
                }
                if opentracker
                else {},
                "register_ms_per_file": register_s / files * 1000,
                "clients": TRACKER_CLIENTS,
                "seconds_per_run": seconds,
                "catalogue": f"{files} files x {chunks} chunks x {replicas} replicas",
                "transport": TRACKER_TLS_TRANSPORT if tls else TRACKER_PLAIN_TRANSPORT,
            }
        )

    # -- scaling --------------------------------------------------------------------------------

    def w_scaling(self) -> None:
        for size in self.plan.scaling_sizes:
            self.scaling_size(size)
        for n in self.net.holders:
            self.memory.after_scaling[n.name] = peak_rss_mib(n.proc.popen.pid)
        for count in self.plan.file_counts:
            self.scaling_files(count)

    def scaling_size(self, size: int) -> None:
        shared = self.net.share(size)
        node_s: list[float] = []
        peaks: list[float] = []

        def ours() -> float:
            got = self.download(shared, 1, None)
            node_s.append(got["node_s"][0])
            peaks.append(got["peaks"][0])
            return size / MB / got["node_s"][0]

        values, _, _ = self.interleave(f"scaling-{size_tag(size)}", ours, {}, "MB/s")
        self.add(
            {
                "workload": f"scaling-{size_tag(size)}",
                "unit": "MB/s",
                "ours": median(values),
                "runs": values,
                "anchors": {},
                "limit": self.limit_cell("sha256"),
                "bytes": size,
                "node_seconds": node_s[-len(values) :],
                "downloader_peak_mib": max(self.memory.by_download.get(size, [0.0])),
                "downloader_peaks_mib": peaks,
            }
        )

    def scaling_files(self, count: int) -> None:
        chunks, replicas, holders = SCALE_SHAPE
        root = self.work / f"files-{count}"
        (root / "tracker").mkdir(parents=True)
        keys = tracker_load.node_keys(holders, seed="scale")
        started = time.perf_counter()
        file_ids = asyncio.run(
            prefill(root / "tracker" / "tracker.db", count, keys, chunks, replicas)
        )
        prefill_s = time.perf_counter() - started
        ids_file = root / "file-ids.txt"
        ids_file.write_text("\n".join(file_ids) + "\n")
        c = Cluster(root)
        try:
            t0 = time.perf_counter()
            url = c.start_tracker(
                "--audit-interval", "86400", "--repair-grace", "86400", heartbeat=300.0
            )
            start_s = time.perf_counter() - t0
            check_catalogue(c, url, keys, file_ids, chunks, replicas)
            results: list[dict[str, Any]] = []

            def ours() -> float:
                got = tracker_load.load(
                    url,
                    self.plan.files_seconds,
                    1,
                    kind="detail",
                    protocol="p2pshare",
                    ids_file=ids_file,
                )
                if got.get("errors"):
                    raise RuntimeError(f"{got['errors']} errors: {got.get('first_error')}")
                results.append(got)
                return float(got["p50_ms"])

            values, _, _ = self.interleave(f"scaling-files-{count_tag(count)}", ours, {}, "ms")
        finally:
            c.close()
        shutil.rmtree(root, ignore_errors=True)
        r = results[-len(values) :]
        self.add(
            {
                "workload": f"scaling-files-{count_tag(count)}",
                "unit": "ms",
                "ours": median(values),
                "runs": values,
                "anchors": {},
                "limit": None,
                "p99_ms": median([x["p99_ms"] for x in r]),
                "rps": median([x["rps"] for x in r]),
                "files": count,
                "clients": 1,
                "catalogue": f"{count} files x {chunks} chunks x {replicas} replicas "
                f"on {holders} nodes",
                "prefill_seconds": prefill_s,
                "tracker_start_seconds": start_s,
                "prefill": "rows written before start with the tracker's migrations, "
                "Repository.save_node and table models, one transaction",
            }
        )


# --- the scaling catalogue --------------------------------------------------------------------


async def prefill(
    db_path: Path, count: int, keys: list[Any], chunks: int, replicas: int
) -> list[str]:
    """Write ``count`` files into a new tracker database at ``db_path``; return their ids.

    The schema comes from the tracker's own migrations, the nodes from
    :meth:`Repository.save_node`, and the rows of each file are those
    ``Repository._register`` writes (file, chunks, replicas, an event), through the tracker's
    table models, in one transaction. Each file has ``chunks`` made-up chunk ids (64 KiB
    chunks, the last one short) on ``replicas`` of the nodes of ``keys``, owned by the first.
    """

    from p2pshare.core.manifest import Manifest
    from p2pshare.core.merkle import merkle_root
    from p2pshare.tracker.clock import SystemClock
    from p2pshare.tracker.db import Database
    from p2pshare.tracker.liveness import Liveness
    from p2pshare.tracker.migrate import upgrade
    from p2pshare.tracker.models import Chunk, Event, File, Replica
    from p2pshare.tracker.repository import AVAILABLE, Repository

    clock = SystemClock()
    now = clock.now()
    created = datetime(2030, 1, 1, tzinfo=UTC)
    owner = keys[0].node_id
    node_ids = [k.node_id for k in keys]
    size = (chunks - 1) * tracker_load.CHUNK + 1000

    def rows() -> tuple[list[dict[str, Any]], ...]:
        rng = random.Random(count)
        files, chunk_rows, replica_rows, events = [], [], [], []
        for f in range(count):
            ids = [
                hashlib.sha256(f"scale {count} {f} {i}".encode()).hexdigest() for i in range(chunks)
            ]
            m = Manifest.parse(
                {
                    "name": f"scale-{f:06d}.bin",
                    "size": size,
                    "chunk_size": tracker_load.CHUNK,
                    "sha256": hashlib.sha256(f"scale file {count} {f}".encode()).hexdigest(),
                    "chunk_ids": ids,
                    "file_id": merkle_root(ids),
                    "created": created,
                }
            )
            files.append(
                {
                    "file_id": m.file_id,
                    "name": m.name,
                    "size": m.size,
                    "chunk_size": m.chunk_size,
                    "chunk_count": len(ids),
                    "manifest": m.canonical_json().decode("utf-8"),
                    "owner_id": owner,
                    "replica_target": replicas,
                    "state": AVAILABLE,
                    "created": now,
                    "deleted_at": None,
                    "downloads": 0,
                }
            )
            pairs = 0
            for i, cid in enumerate(ids):
                chunk_rows.append({"file_id": m.file_id, "index": i, "chunk_id": cid})
                for node in rng.sample(node_ids, replicas):
                    replica_rows.append(
                        {
                            "chunk_id": cid,
                            "node_id": node,
                            "since": now,
                            "verified_ok": True,
                            "last_verified": now,
                        }
                    )
                    pairs += 1
            events.append(
                {
                    "at": now,
                    "kind": "file-registered",
                    "file_id": m.file_id,
                    "node_id": owner,
                    "nbytes": m.size,
                    "detail": f"{len(ids)} chunks, {pairs} replicas acked",
                }
            )
        replica_rows.sort(key=lambda r: (r["chunk_id"], r["node_id"]))  # b-tree order
        chunk_rows.sort(key=lambda r: (r["file_id"], r["index"]))
        files.sort(key=lambda r: r["file_id"])
        return files, chunk_rows, replica_rows, events

    files, chunk_rows, replica_rows, events = await asyncio.to_thread(rows)
    db = await asyncio.to_thread(Database.open, f"sqlite+aiosqlite:///{db_path}")
    try:
        await upgrade(db)
        repo = Repository(db, Liveness(30.0, clock), clock)
        for i, key in enumerate(keys):
            await repo.save_node(tracker_load.announce_of(key, i))
        async with db.write() as s:
            conn = await s.connection()
            # this connection only: a page cache the size of the catalogue (random keys)
            await conn.exec_driver_sql("PRAGMA cache_size=-2000000")
            for model, batch in (
                (File, files),
                (Chunk, chunk_rows),
                (Replica, replica_rows),
                (Event, events),
            ):
                await conn.exec_driver_sql(*_driver_insert(model.__table__, batch, conn.dialect))
    finally:
        await db.close()
    return [f["file_id"] for f in files]


def _driver_insert(table: Any, rows: list[dict[str, Any]], dialect: Any) -> tuple[str, list]:
    """Return one INSERT of ``rows`` into ``table`` for the driver's ``executemany``, each
    value encoded by its column type's own bind processor (as SQLAlchemy would send it)."""
    cols = list(rows[0])
    quote = dialect.identifier_preparer.quote
    procs = [table.c[c].type._cached_bind_processor(dialect) for c in cols]
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in cols)}) "
        f"VALUES ({', '.join('?' * len(cols))})"
    )
    cache: dict[tuple[int, Any], Any] = {}

    def encode(i: int, value: Any) -> Any:
        proc = procs[i]
        if proc is None or value is None:
            return value
        key = (i, value)
        if key not in cache:
            cache[key] = proc(value)
        return cache[key]

    encodable = [isinstance(rows[0][c], datetime | bool) for c in cols]
    params = [
        tuple(
            encode(i, row[c]) if encodable[i] else (procs[i](row[c]) if procs[i] else row[c])
            for i, c in enumerate(cols)
        )
        for row in rows
    ]
    return sql, params


def check_catalogue(
    c: Cluster, url: str, keys: list[Any], file_ids: list[str], chunks: int, replicas: int
) -> None:
    """Announce the holders (so they are online) and check a few files' details: every
    chunk with its ``replicas`` holders online, as a registration would have left them."""

    async def announce() -> None:
        async with tracker_load.new_session(4) as session:
            await tracker_load.announce_all(session, url, keys)

    asyncio.run(announce())
    for fid in random.Random(1).sample(file_ids, min(5, len(file_ids))):
        d = c.get(f"/v1/files/{fid}")
        ok = d.get("manifest", {}).get("file_id") == fid and len(d.get("chunks", [])) == chunks
        if not ok or any(ch["replicas_online"] != replicas for ch in d["chunks"]):
            raise RuntimeError(f"the prefilled file {fid} reads back wrong: {str(d)[:300]}")
    stats = c.get("/v1/stats")
    if stats.get("files") not in (None, len(file_ids)):
        raise RuntimeError(f"the tracker counts {stats.get('files')} files, not {len(file_ids)}")


# --- helpers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def python_tcp_rate(seconds: float) -> float:
    """Return MB/s of this Python sending 1 MiB writes over loopback TCP to a reader thread."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    got = [0]

    def reader() -> None:
        conn, _ = server.accept()
        with conn:
            buf = bytearray(MiB)
            while n := conn.recv_into(buf):
                got[0] += n

    t = threading.Thread(target=reader)
    t.start()
    block = os.urandom(MiB)
    with socket.create_connection(("127.0.0.1", port)) as out:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            out.sendall(block)
    t.join()
    elapsed = time.perf_counter() - started
    server.close()
    return got[0] / MB / elapsed


def install_iperf3() -> None:
    """Install Debian's iperf3 with apt-get (quietly, no questions)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("    installing iperf3 (apt-get)", flush=True)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "iperf3"]):
        subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=600)
    if shutil.which("iperf3") is None:
        raise RuntimeError("iperf3 is not installed and apt-get could not install it")


# --- output -----------------------------------------------------------------------------------

ROW_ORDER = [
    "limit-tcp",
    "limit-sha256",
    "limit-disk",
    "download-1",
    "download-3",
    "upload",
    "download-1-tls",
    "upload-tls",
    "download-1-encrypted",
    "upload-encrypted",
    "memory",
    *TRACKER_ROWS,
]


def sort_key(name: str) -> tuple[int, int, str]:
    if name in ROW_ORDER:
        return (ROW_ORDER.index(name), 0, name)
    if name.startswith("scaling-files-"):
        return (len(ROW_ORDER) + 1, int(name.rsplit("-", 1)[1].replace("k", "000")), name)
    if name.startswith("scaling-"):
        tag = name.rsplit("-", 1)[1]
        n = int(tag[:-1]) * (GiB if tag.endswith("g") else MiB)
        return (len(ROW_ORDER), n, name)
    return (len(ROW_ORDER) + 2, 0, name)


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "—"
    return f"{a / b:.2f}"


def anchors_text(row: Row) -> str:
    parts = []
    for name, value in row.get("anchors", {}).items():
        if value is None:
            parts.append(f"{name} failed")
        else:
            parts.append(f"{name} {fmt(value)} (x{ratio(row['ours'], value)})")
    return ", ".join(parts) or "—"


def limit_text(row: Row) -> str:
    lim = row.get("limit")
    if not lim:
        return "—"
    return f"{lim['name']} {fmt(lim['value'])} (x{ratio(row['ours'], lim['value'])})"


def print_header() -> None:
    print(f"{'workload':<20} {'unit':<12} {'ours':>10}   anchors (ours/anchor)   limit", flush=True)


def print_row(row: Row) -> None:
    extra = f"   ERROR {row['error']}" if row.get("error") else ""
    print(
        f"{row['workload']:<20} {row['unit']:<12} {fmt(row['ours']):>10}   "
        f"{anchors_text(row)}   {limit_text(row)}{extra}",
        flush=True,
    )


def targets_of(row: Row) -> str:
    targets = row.get("targets")
    if not targets:
        return "—"
    words = {True: "met", False: "NOT met", None: "not judged (a figure is missing)"}
    return "; ".join(f"{name}: {words[ok]}" for name, ok in targets.items())


def positive(value: Any) -> bool:
    """Whether ``value`` is a number above 0 (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def judge(rows: list[Row]) -> None:
    """Add to ``rows`` the issue's targets that are ratios of one run (the memory row judges
    its own): True met, False not, None when a figure it needs is missing."""
    by_name = {r["workload"]: r for r in rows}

    def at_least(a: Any, b: Any, times: float) -> bool | None:
        return bool(a >= times * b) if positive(a) and positive(b) else None

    def add(name: str, target: str, ok: bool | None) -> None:
        row = by_name.get(name)
        if row is not None and not row.get("error"):
            row.setdefault("targets", {})[target] = ok

    one = by_name.get("download-1", {})
    add(
        "download-1",
        f">= {DOWNLOAD_1_OVER_LIBTORRENT}x libtorrent",
        at_least(
            one.get("ours"),
            one.get("anchors", {}).get("libtorrent"),
            DOWNLOAD_1_OVER_LIBTORRENT,
        ),
    )
    three = by_name.get("download-3", {})
    clients = [v for v in three.get("anchors", {}).values() if positive(v)]
    add(
        "download-3",
        f">= {DOWNLOAD_3_OVER_BEST}x the best client",
        at_least(three.get("ours"), max(clients, default=None), DOWNLOAD_3_OVER_BEST),
    )
    up = by_name.get("upload", {})
    add(
        "upload",
        f">= {UPLOAD_OF_LIMIT:.0%} of disk / 3",
        at_least(up.get("ours"), (up.get("limit") or {}).get("value"), UPLOAD_OF_LIMIT),
    )
    tracker = by_name.get("tracker", {})
    rate, p99 = tracker.get("ours"), tracker.get("p99_ms")
    add(
        "tracker",
        f">= {TRACKER_ANNOUNCES:,} announces/s",
        bool(rate >= TRACKER_ANNOUNCES) if positive(rate) else None,
    )
    add(
        "tracker",
        f"p99 < {TRACKER_P99_MS} ms",
        bool(p99 < TRACKER_P99_MS) if positive(p99) else None,
    )
    sizes = sorted((n for n in by_name if re.fullmatch(r"scaling-\d+[mg]", n)), key=sort_key)
    if len(sizes) >= 2:
        big, next_size = by_name[sizes[-1]], by_name[sizes[-2]]
        add(
            sizes[-1],
            f">= {SCALING_FLOOR:.0%} of {sizes[-2]}'s MB/s",
            at_least(big.get("ours"), next_size.get("ours"), SCALING_FLOOR),
        )
    counts = sorted((n for n in by_name if n.startswith("scaling-files-")), key=sort_key)
    if len(counts) >= 2:
        most, fewest = by_name[counts[-1]], by_name[counts[0]]
        add(
            counts[-1],
            f"p50 within {FILES_P50_TIMES:g}x of {counts[0]}'s",
            at_least(fewest.get("ours"), most.get("ours"), 1 / FILES_P50_TIMES),
        )


def markdown(doc: dict[str, Any]) -> str:
    """Return the readable table of a results document."""
    m = doc["machine"]
    s = doc["settings"]
    lines = [
        "# p2pshare benchmark suite",
        "",
        f"{m['date']}, {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, Linux {m['kernel']}, "
        f"Python {m['python']}, p2pshare {m['packages'].get('p2pshare', '?')}"
        + (f" at {m['git']['commit'][:12]}" if m.get("git") else "")
        + (
            f" (+{m['git']['modified_files']} modified files)"
            if m.get("git", {}).get("modified_files")
            else ""
        )
        + ".",
        "",
        f"Medians of {s['rounds']} round{'s' if s['rounds'] > 1 else ''}"
        f"{' after a discarded warm-up' if s['warmup'] else ''}; ours and each anchor take "
        "turns within a round. MB = 10^6 bytes. Ratios are ours / anchor and ours / limit. "
        f"Transfers of {label(s['size'])}; took {s['total_seconds']:.0f} s in all"
        + (" (smoke: small sizes, no anchors)." if s["smoke"] else "."),
        "",
        "| workload | unit | ours | runs | anchors (ours/anchor) | limit (ours/limit) | targets |",
        "|---|---|---:|---|---|---|---|",
    ]
    for row in doc["rows"]:
        runs = ", ".join(fmt(v) for v in row.get("runs", []))
        name = row["workload"] + (" (failed)" if row.get("error") else "")
        lines.append(
            f"| {name} | {row['unit']} | {fmt(row['ours'])} | {runs} | {anchors_text(row)} "
            f"| {limit_text(row)} | {targets_of(row)} |"
        )
    lines += ["", "## Notes", ""]
    for row in doc["rows"]:
        notes = notes_of(row)
        if notes:
            lines.append(f"- **{row['workload']}**: {notes}")
    lines.append("")
    return "\n".join(lines)


def durable_medians(
    durable: dict[str, list[float]], anchor_values: dict[str, list[float]]
) -> dict[str, float]:
    """Return each client's median MB/s to durable copies over the rounds counted in
    ``anchor_values`` (its last values: the first, when there are more, is the warm-up's)."""
    out = {}
    for name, runs in anchor_values.items():
        counted = durable.get(name, [])[-len(runs) :] if runs else []
        if counted:
            out[name] = median(counted)
    return out


def notes_of(row: Row) -> str:
    """Return the extra facts of a row, in a sentence or two."""
    w = row["workload"]
    out = []
    if row.get("error"):
        out.append(f"failed: {row['error']}")
    if w == "download-1" and row.get("cli_wall_mb_s"):
        out.append(f"{fmt(row['cli_wall_mb_s'])} MB/s by the CLI's wall time")
    if w == "download-3" and row.get("node_seconds"):
        out.append(f"per downloader, node seconds: {row['node_seconds']}")
    if row.get("sources_last_run"):
        out.append(f"chunks by source in the last run: {row['sources_last_run']}")
    if row.get("anchors_durable") and positive(row.get("ours")):
        shown = ", ".join(
            f"{name} {fmt(v)} MB/s (x{row['ours'] / v:.2f})"
            for name, v in row["anchors_durable"].items()
        )
        out.append(
            f"the clients to a durable copy (their seconds plus an fsync of each copy once "
            f"they exited, a lower bound; ours are durable when counted): {shown}"
        )
    if w in TRACKER_ROWS:
        out.append(
            f"announces p50 {fmt(row.get('p50_ms'))} ms, p99 {fmt(row.get('p99_ms'))} ms; "
            f"file-detail reads {fmt(row.get('detail_rps'))}/s, p50 "
            f"{fmt(row.get('detail_p50_ms'))} ms, p99 {fmt(row.get('detail_p99_ms'))} ms; "
            f"{row.get('clients')} clients, {row.get('catalogue')}; {row.get('transport')}; "
            f"tracker process {fmt(row.get('tracker_cpu_cores'))} cores busy"
        )
        out.append(f"the load generator used {fmt(row.get('client_cpu_cores'))} cores")
        for name, p50 in (row.get("anchor_p50_ms") or {}).items():
            p99 = (row.get("anchor_p99_ms") or {}).get(name)
            cpu = (row.get("anchor_client_cpu_cores") or {}).get(name)
            out.append(
                f"{name}: p50 {fmt(p50)} ms, p99 {fmt(p99)} ms, the load generator used "
                f"{fmt(cpu)} cores (at 1 it, not the tracker, sets the rate)"
            )
    if w == "memory":
        out.append(
            f"per node {row.get('per_node')}; tracker {fmt(row.get('tracker_mib'))} MiB; "
            f"CLI {fmt(row.get('cli_mib'))} MiB; downloading node by file size "
            f"{row.get('download_peak_mib')}; holders after the scaling runs "
            f"{row.get('holders_after_scaling_mib')}"
        )
    if w.startswith("scaling-files-"):
        out.append(
            f"p99 {fmt(row.get('p99_ms'))} ms, {fmt(row.get('rps'))} reads/s with one client; "
            f"{row.get('catalogue')}; prefilled in {fmt(row.get('prefill_seconds'))} s"
        )
    if row.get("note"):
        out.append(str(row["note"]))
    if w.startswith("limit-") and row.get("method"):
        out.append(str(row["method"]))
    for name, err in row.get("anchor_errors", {}).items():
        out.append(f"anchor {name}: {err}")
    return "; ".join(out)


def check(doc: dict[str, Any], plan: Plan) -> list[str]:
    """Return what is wrong with a results document: a missing row, or a number that is not
    > 0 (ours, each run, each anchor that ran, the limit)."""
    want = set()
    for w in plan.workloads:
        if w == "limits":
            want |= {"limit-tcp", "limit-sha256", "limit-disk"}
        elif w == "encrypted":
            want |= {"upload-encrypted", "download-1-encrypted"}
        elif w == "tls":
            want |= {"download-1-tls", "upload-tls"}
        elif w == "tracker":
            want |= set(TRACKER_ROWS)
        elif w == "scaling":
            want |= {f"scaling-{size_tag(n)}" for n in plan.scaling_sizes}
            want |= {f"scaling-files-{count_tag(n)}" for n in plan.file_counts}
        else:
            want.add(w)
    rows = {r["workload"]: r for r in doc["rows"]}
    problems = [f"no row {name}" for name in sorted(want - rows.keys())]
    for name, r in rows.items():
        if r.get("error"):
            problems.append(f"{name}: {r['error']}")
        if not positive(r.get("ours")):
            problems.append(f"{name}: ours is {r.get('ours')!r}")
        if not r.get("runs") or not all(positive(v) for v in r["runs"]):
            problems.append(f"{name}: runs {r.get('runs')!r}")
        for a, v in r.get("anchors", {}).items():
            if v is not None and not positive(v):
                problems.append(f"{name}: anchor {a} is {v!r}")
        if r.get("limit") is not None and not positive(r["limit"].get("value")):
            problems.append(f"{name}: limit {r['limit']!r}")
        if name in TRACKER_ROWS and not (positive(r.get("p50_ms")) and positive(r.get("p99_ms"))):
            problems.append(f"{name}: p50/p99 {r.get('p50_ms')!r}/{r.get('p99_ms')!r}")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="small sizes, 1 round, no anchors")
    p.add_argument(
        "--only",
        action="append",
        metavar="WORKLOAD",
        help=f"run only these (repeatable or comma-separated): {', '.join(WORKLOADS)}",
    )
    p.add_argument("--size", help="size of the transfers and limits (default 1GiB; smoke 16MiB)")
    p.add_argument("--rounds", type=int, help="measured rounds (default 3; smoke 1)")
    p.add_argument("--no-anchors", action="store_true", help="skip libtorrent/aria2c/opentracker")
    p.add_argument("--workdir", type=Path, help="where files and nodes live (default: a temp dir)")
    p.add_argument(
        "--out",
        type=Path,
        default=HERE / "results",
        help="results dir (default bench/results: latest.*, partial.* with --only, smoke.*)",
    )
    args = p.parse_args()
    plan = make_plan(args)
    started = time.perf_counter()
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    free, need = shutil.disk_usage(base).free, disk_needed(plan)
    if free < need:  # refused now, not after minutes of work when the disk fills up
        print(
            f"suite.py: error: {base} has {format_size(free)} free, and this plan needs about "
            f"{format_size(need)} (give --workdir on a larger disk, or fewer workloads with "
            "--only, or a smaller --size)",
            file=sys.stderr,
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="p2pshare-suite-", dir=base))
    machine = machine_facts()
    print(
        f"p2pshare suite{' (smoke)' if plan.smoke else ''}: {', '.join(plan.workloads)}; "
        f"{label(plan.size)} transfers, {plan.rounds} round(s)"
        f"{' after a warm-up' if plan.warmup else ''}, anchors {'on' if plan.anchors else 'off'}; "
        f"{machine['cpu']}, {machine['cores']} cores, load {machine['load_average_1m']}; "
        f"work dir {work}",
        flush=True,
    )
    suite = Suite(plan, work)
    try:
        suite.run()
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    machine["anchor_tools"] = suite.anchors.tools
    if suite.anchors.error and plan.anchors:
        machine["anchor_error"] = suite.anchors.error
    machine["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    doc = {
        "machine": machine,
        "settings": {
            "smoke": plan.smoke,
            "workloads": list(plan.workloads),
            "size": plan.size,
            "rounds": plan.rounds,
            "warmup": plan.warmup,
            "anchors": plan.anchors,
            "tracker_seconds": plan.tracker_seconds,
            "scaling_sizes": list(plan.scaling_sizes),
            "file_counts": list(plan.file_counts),
            "total_seconds": round(total, 1),
        },
        "rows": sorted(suite.rows.values(), key=lambda r: sort_key(r["workload"])),
    }
    if not plan.smoke:  # the targets speak of full-size runs
        judge(doc["rows"])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "smoke" if plan.smoke else "partial" if args.only else "latest"
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    md = markdown(doc)
    md_path.write_text(md)
    print()
    print(md)
    print(f"wrote {json_path} and {md_path} in {total:.0f} s")
    if plan.smoke:
        problems = check(json.loads(json_path.read_text()), plan)
        for problem in problems:
            print(f"smoke: {problem}", file=sys.stderr)
        if problems:
            return 1
        print("smoke: every row has numbers > 0")
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
