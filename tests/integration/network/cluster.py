"""A tracker and nodes as real ``p2pshare`` processes on loopback, for tests and benchmarks.

Every process is started the way a user starts it (``python -m p2pshare --json tracker|node``
with port 0) and tells its addresses on its first stdout line; its log goes to a file in the
cluster's directory. :meth:`Cluster.close` stops every process (SIGTERM, then SIGKILL after a
bound), so a failing test leaves nothing running.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 120.0
HEARTBEAT = 1.0
"""Seconds between announces in tests: a node is offline 3 s after it stops."""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PSHARE_")}
    env["P2PSHARE_LOG_LEVEL"] = "INFO"
    return env


@dataclass
class Proc:
    """One started process and what it said when ready."""

    label: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    ready: dict[str, Any]

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Node:
    """A node process: its name, data dir, addresses and id."""

    name: str
    data_dir: Path
    proc: Proc
    storage: str

    @property
    def node_id(self) -> str:
        return str(self.proc.ready["node_id"])

    @property
    def address(self) -> str:
        return str(self.proc.ready["address"])

    @property
    def control_url(self) -> str:
        return str(self.proc.ready["control_url"])

    def chunk_path(self, chunk_id: str) -> Path:
        return self.data_dir / "chunks" / chunk_id[:2] / chunk_id


@dataclass
class Cluster:
    """A tracker and named nodes under one directory."""

    root: Path
    tracker: Proc | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """settings for every process started (``P2PSHARE_HEADER_TIMEOUT``: ``"1.5"``, ...)"""
    _procs: list[Proc] = field(default_factory=list)

    # -- processes ------------------------------------------------------------------------

    def _start(self, label: str, *args: str, timeout: float = START_TIMEOUT) -> Proc:
        log_path = self.root / f"{label}.log"
        cmd = [sys.executable, "-m", "p2pshare", "--json", *args]
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**_clean_env(), **self.env},
            )
        assert popen.stdout is not None
        line = _read_line(popen.stdout, timeout)
        if not line:
            popen.kill()
            popen.wait()
            raise RuntimeError(f"{label} did not start: {log_path.read_text(errors='replace')}")
        proc = Proc(label, list(args), popen, log_path, json.loads(line))
        self._procs.append(proc)
        return proc

    def start_tracker(self, *extra: str, port: int = 0, heartbeat: float | None = HEARTBEAT) -> str:
        """Start (or restart, on the same data dir) the tracker; return its URL.

        ``heartbeat``: seconds between announces (None: the tracker's default, as users run it).
        """
        beat = ("--heartbeat-interval", str(heartbeat)) if heartbeat is not None else ()
        self.tracker = self._start(
            "tracker",
            "tracker",
            "--port",
            str(port),
            "--data",
            str(self.root / "tracker"),
            *beat,
            *extra,
        )
        return self.tracker_url

    @property
    def tracker_url(self) -> str:
        assert self.tracker is not None
        return str(self.tracker.ready["listening"])

    def start_node(self, name: str, storage: str = "1GiB", *extra: str) -> Node:
        """Start (or restart, on the same data dir) node ``name``."""
        data = self.root / name
        proc = self._start(
            name,
            "node",
            "--name",
            name,
            "--port",
            "0",
            "--control-port",
            "0",
            "--data",
            str(data),
            "--tracker",
            self.tracker_url,
            "--storage",
            storage,
            *extra,
        )
        node = Node(name, data, proc, storage)
        self.nodes[name] = node
        return node

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to node ``name`` (or "tracker") and wait for it to exit."""
        proc = self.tracker if name == "tracker" else self.nodes[name].proc
        assert proc is not None
        proc.popen.send_signal(sig)
        proc.popen.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        """Stop every process this cluster started."""
        for proc in reversed(self._procs):
            if proc.alive:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self._procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()

    # -- the tracker's view -----------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` from the tracker; return the decoded JSON (any status)."""
        r = httpx.get(plain(self.tracker_url, path), params=params, timeout=10, verify=False)
        return r.json()

    def wait_online(self, count: int, timeout: float = 20.0) -> None:
        """Wait until the tracker lists ``count`` online nodes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.get("/v1/nodes", online="true")["items"]) == count:
                return
            time.sleep(0.1)
        raise AssertionError(f"the tracker never listed {count} online nodes")

    def wait_offline(self, node: Node, timeout: float = 20.0) -> None:
        """Wait until the tracker no longer lists ``node`` as online."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            online = {n["node_id"] for n in self.get("/v1/nodes", online="true")["items"]}
            if node.node_id not in online:
                return
            time.sleep(0.2)
        raise AssertionError(f"the tracker still lists {node.name} as online")

    def status(self, node: Node) -> dict[str, Any]:
        """Return the node's own status (control API)."""
        r = httpx.get(f"{node.control_url}/v1/control/status", timeout=10)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    # -- the CLI --------------------------------------------------------------------------

    def cli(
        self, node: Node | None, *args: str, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``p2pshare --json ARGS --node URL`` against ``node`` and return its outcome."""
        cmd = [sys.executable, "-m", "p2pshare", "--json", *args]
        if node is not None:
            cmd += ["--node", node.control_url]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=_clean_env(), check=False
        )

    def cli_json(self, node: Node, *args: str) -> Any:
        """Run the CLI, require exit code 0, and return its JSON document."""
        proc = self.cli(node, *args)
        assert proc.returncode == 0, f"{args}: exit {proc.returncode}: {proc.stderr}"
        return json.loads(proc.stdout)

    def upload(self, node: Node, path: Path, *extra: str) -> dict[str, Any]:
        return self.cli_json(node, "upload", str(path), "--auto", *extra)  # type: ignore[no-any-return]

    def download(self, node: Node, file_id: str, out: Path, *extra: str) -> dict[str, Any]:
        return self.cli_json(node, "download", file_id, "-o", str(out), *extra)  # type: ignore[no-any-return]


def plain(address: str, path: str = "") -> str:
    """Return ``path`` on ``address`` without its certificate pin (``#...``). Tests that read
    with httpx pass ``verify=False``: the pin itself is checked by the nodes' own client."""
    return address.partition("#")[0] + path


def make_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their SHA-256.

    The bytes are an AES-256-CTR keystream under a random key: as unpredictable as
    ``os.urandom`` for our purpose (no two files share chunks) at ~13x its speed here (0.18
    against 2.3 s per GiB), which matters for the benchmark's many GiB."""
    digest = hashlib.sha256()
    stream = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    zeros = bytes(1 << 20)
    with path.open("wb") as fh:
        left = size
        while left:
            piece = stream.update(zeros[: min(left, len(zeros))])
            fh.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


DIRECT_CHECK_BYTES = 256 << 20


def sha256(path: Path) -> str:
    """Return the SHA-256 of the file at ``path``.

    A big file is read by direct I/O where the filesystem allows it: read once to be checked,
    it then does not fill the page cache, which costs ~3 CPU s per GiB on VMs like this one (a
    4 GiB check took ~15 s instead of ~5). A small one is read through the cache (a direct
    read would first wait for its bytes just written to reach the disk)."""
    if path.stat().st_size >= DIRECT_CHECK_BYTES:
        try:
            return _sha256_read(path, os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return _sha256_read(path, 0)  # through the page cache


def _sha256_read(path: Path, flags: int) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | flags)
    buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as direct I/O needs
    try:
        with memoryview(buf) as view:
            while n := os.readv(fd, [view]):
                digest.update(view[:n])
    finally:
        os.close(fd)
        buf.close()
    return digest.hexdigest()


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    """Return the first line of ``stream`` (b"" at EOF or after ``timeout`` seconds)."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return b""
        piece = os.read(fd, 4096)
        if not piece:
            return b""
        buf += piece
    return buf.split(b"\n", 1)[0]


@contextmanager
def cluster(root: Path, nodes: int = 4, storage: str = "1GiB") -> Iterator[Cluster]:
    """Yield a running tracker and ``nodes`` nodes (n1, n2, ...) that have all announced."""
    root.mkdir(parents=True, exist_ok=True)
    c = Cluster(root)
    try:
        c.start_tracker()
        for i in range(1, nodes + 1):
            c.start_node(f"n{i}", storage)
        c.wait_online(nodes)
        yield c
    finally:
        c.close()
