"""BitTorrent anchors: libtorrent and aria2c download speeds on this machine (a figure, not a test).

usage: python bench/anchors.py [--size 256MiB] [--counts 1,3] [--clients libtorrent,aria2c]
                               [--piece-size 4MiB] [--tracker-seconds 0] [--workdir DIR]

Our download speed means little alone; these anchors are mature BitTorrent clients measured on
the same machine in the same run. Everything runs in a network namespace of its own with only
``lo`` up, so no byte leaves the machine and nothing else on it is reachable:

* :func:`ensure_tools` installs, with apt-get when missing, Debian's ``aria2``, ``opentracker``,
  ``mktorrent`` and ``python3-libtorrent`` and returns their versions (None: unavailable).
* :class:`BtSwarm` makes a private torrent of one file with ``mktorrent`` (4 MiB pieces by
  default: 256 pieces for 1 GiB; see :data:`PIECE_SIZE`), whose one announce URL is an
  ``opentracker`` on 127.0.0.1 in the namespace, in whitelist mode (Debian builds it so) with
  the torrent's info hash; starts ONE seeder, a libtorrent session (``bench/bt_client.py seed``
  under the system python3); and :meth:`BtSwarm.download` starts N downloaders at once,
  libtorrent (``bt_client.py download``) or ``aria2c``, and returns each one's seconds from
  its start until it reported the torrent complete with every piece hash-checked (and, in
  :attr:`BtSwarm.last_durable`, the same plus an fsync of its copy: the clients leave their
  bytes in the page cache, while our downloads are durable when counted). DHT, local
  peer discovery, peer exchange, UPnP/NAT-PMP and uTP are off in every client (and the torrent
  is private), so the tracker is the only source of peers: downloaders get data from the
  seeder and from each other only.
* :func:`opentracker_rate` starts an opentracker in a namespace of its own and lets the
  caller's load generator run against it (see its docstring for the contract).

Run as a script it makes a random file of ``--size``, seeds it, and prints each downloader's
seconds and MB/s (10**6 bytes/s) for 1 and then 3 libtorrent and aria2c downloaders at once;
``--tracker-seconds N`` adds :func:`opentracker_rate` with a trivial announce loop.

Every process, the namespace and the temp files go when the context exits (ctrl-C and
exceptions included); a namespace left behind by a killed run (its name carries the pid that
made it) is deleted by the next run.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar

SYSTEM_PYTHON = "/usr/bin/python3"
"""Debian's python3-libtorrent is built for this interpreter, not for the project's venv."""
BT_CLIENT = Path(__file__).resolve().with_name("bt_client.py")
PACKAGES: dict[str, str] = {
    "aria2": "aria2c",
    "opentracker": "opentracker",
    "mktorrent": "mktorrent",
    "python3-libtorrent": "",
}
"""Debian package -> the command it must provide ("" for the libtorrent Python module)."""
CLIENTS = ("libtorrent", "aria2c")

PIECE_SIZE = 4 * 1024 * 1024
"""Default piece size: 4 MiB, 256 pieces for 1 GiB. Measured here for a 1 GiB file (1 and 3
downloaders, both orders): 1, 2 and 4 MiB pieces were equal within run-to-run noise for
libtorrent and aria2c; 8 and 16 MiB made aria2c slower (one downloader ~200-270 MB/s instead of
~300) and gave libtorrent nothing."""
TRACKER_PORT = 6969
SEEDER_PORT = 6881
FIRST_DOWNLOADER_PORT = 7000
NS_PREFIX = "p2panchor"

CMD_TIMEOUT = 15.0
"""Bound on one ``ip`` command or probe."""
APT_TIMEOUT = 900.0
"""Bound on one apt-get run."""
MKTORRENT_TIMEOUT = 600.0
"""Bound on hashing the file into a torrent."""
START_TIMEOUT = 300.0
"""Bound on the tracker listening and on the seeder checking the file and announcing."""
DOWNLOAD_TIMEOUT = 600.0
"""Bound on one :meth:`BtSwarm.download` call (all its downloaders)."""
SEED_LIFETIME = 6 * 3600.0
"""The seeder exits by itself after this long (it also exits when this process goes)."""
STOP_TIMEOUT = 5.0
"""Bound on a process exiting after SIGTERM, and on a namespace emptying after SIGKILL."""
LOAD_GRACE = 120.0
""":func:`opentracker_rate` kills the load generator after 2 * seconds + this."""
WHITELIST_SIZE = 1000
""":func:`opentracker_rate` whitelists at least this many of :func:`bench_info_hashes`."""

ARIA2_DONE = "p2pshare-anchor-complete"
"""The line aria2c's completion hook prints: the torrent is complete, every piece checked."""
_ARIA2_HOOK = f"""#!/bin/sh
# aria2c runs this when the torrent is complete (every piece hash-checked), before seeding
echo "{ARIA2_DONE} $1"
"""

_PROBE = """\
import sys, urllib.parse, urllib.request
url, info_hash = sys.argv[1], bytes.fromhex(sys.argv[2])
query = urllib.parse.urlencode({"info_hash": info_hash, "peer_id": b"-PB0000-probeprobe00",
    "port": 1, "uploaded": 0, "downloaded": 0, "left": 0, "compact": 1, "event": "stopped"},
    quote_via=urllib.parse.quote)  # %20, never "+": opentracker reads "+" as a plus
print(urllib.request.urlopen(url + "/announce?" + query, timeout=5).read().decode("latin-1"))
"""
"""An announce (event=stopped, so it leaves no peer behind) from inside the namespace."""

_TRIVIAL_LOAD = """\
import http.client, json, sys, threading, time, urllib.parse
host, port = urllib.parse.urlsplit(sys.argv[1]).netloc.split(":")
seconds, concurrency, hashes = float(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
counts, errors, end = [0] * concurrency, [0] * concurrency, time.monotonic() + seconds
def worker(i):
    n = 0
    while time.monotonic() < end:
        n += 1
        q = urllib.parse.urlencode({"info_hash": bytes.fromhex(hashes[n % len(hashes)]),
            "peer_id": b"-PB0000-%012d" % (i * 10**8 + n % 10**8), "port": 1024 + n % 60000,
            "uploaded": 0, "downloaded": 0, "left": 1, "compact": 1}, quote_via=urllib.parse.quote)
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("GET", "/announce?" + q)
            ok = b"failure" not in c.getresponse().read()
            c.close()
        except OSError:
            ok = False
        counts[i] += ok
        errors[i] += not ok
start = time.monotonic()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
for t in threads: t.start()
for t in threads: t.join()
took = time.monotonic() - start
print(json.dumps({"requests": sum(counts), "errors": sum(errors), "seconds": took,
                  "rate": sum(counts) / took}))
"""
"""A deliberately simple announce loop (threads in one CPython process) for ``__main__``."""


# ---------------------------------------------------------------------------------------------
# pure helpers


def bencode_span(data: bytes, start: int) -> int:
    """Return the index just past the bencoded value that begins at ``data[start]``.

    Raises ValueError on malformed input.
    """
    head = data[start : start + 1]
    if head == b"i":
        end = data.find(b"e", start)
        if end > start + 1 and data[start + 1 : end].lstrip(b"-").isdigit():
            return end + 1
    elif head in (b"l", b"d"):
        pos = start + 1
        while pos < len(data) and data[pos : pos + 1] != b"e":
            pos = bencode_span(data, pos)
        if pos < len(data):
            return pos + 1
    elif head.isdigit():
        colon = data.find(b":", start)
        if colon > start and data[start:colon].isdigit():
            end = colon + 1 + int(data[start:colon])
            if end <= len(data):
                return end
    raise ValueError(f"malformed bencoding at byte {start}")


def info_hash(torrent: bytes) -> str:
    """Return the (v1) info hash of a .torrent, hex: SHA-1 of its bencoded ``info`` dict."""
    if torrent[:1] != b"d":
        raise ValueError("not a torrent: the file is not a bencoded dictionary")
    pos = 1
    while torrent[pos : pos + 1] != b"e":
        key_end = bencode_span(torrent, pos)
        key = torrent[torrent.index(b":", pos) + 1 : key_end]
        value_end = bencode_span(torrent, key_end)
        if key == b"info":
            return hashlib.sha1(torrent[key_end:value_end]).hexdigest()
        pos = value_end
        if pos >= len(torrent):
            break
    raise ValueError("not a torrent: no info dictionary")


def bench_info_hashes(count: int) -> list[str]:
    """Return ``count`` info hashes, hex: SHA-1 of ``p2pshare-bench-<i>`` for i < count.

    :func:`opentracker_rate` whitelists these, so a load generator announcing them is answered
    with peers, not with a failure reason.
    """
    return [hashlib.sha1(f"p2pshare-bench-{i}".encode()).hexdigest() for i in range(count)]


def tcp_listening(proc_net_tcp: str, port: int, address: str = "127.0.0.1") -> bool:
    """True if a ``/proc/PID/net/tcp`` text shows a socket listening on ``address:port``."""
    octets = [int(part) for part in address.split(".")]
    want = f"{bytes(reversed(octets)).hex().upper()}:{port:04X}"
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1].upper() == want and fields[3] == "0A":
            return True
    return False


def piece_exponent(piece_size: int) -> int:
    """Return n with 2**n == piece_size (mktorrent's -l); raise ValueError if there is none."""
    n = piece_size.bit_length() - 1
    if piece_size <= 0 or 2**n != piece_size or not 15 <= n <= 28:
        raise ValueError(f"piece size must be a power of two from 32 KiB to 256 MiB: {piece_size}")
    return n


def mb_per_s(size: int, seconds: float) -> float:
    """Return the rate in MB/s (10**6 bytes per second)."""
    return size / seconds / 1e6 if seconds > 0 else float("inf")


# ---------------------------------------------------------------------------------------------
# tools


_apt_updated = False


def _dpkg_version(package: str) -> str | None:
    try:
        r = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}|${Version}", package],
            capture_output=True,
            text=True,
            timeout=CMD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    status, _, version = r.stdout.partition("|")
    return version if r.returncode == 0 and status.endswith(" installed") and version else None


def _usable(package: str) -> bool:
    command = PACKAGES[package]
    if command:
        return shutil.which(command) is not None
    try:
        r = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import libtorrent"],
            capture_output=True,
            timeout=60,
            check=False,
            env=_system_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _apt(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        r = subprocess.run(
            ["apt-get", *args],
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT,
            check=False,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def ensure_tools() -> dict[str, str | None]:
    """Install the anchors' Debian packages that are missing; return package -> version.

    Keys: ``aria2``, ``opentracker``, ``mktorrent``, ``python3-libtorrent``. A value is the
    installed Debian version (``dpkg-query``), or None when the package's command (or, for
    python3-libtorrent, ``import libtorrent`` under /usr/bin/python3) is unavailable even after
    trying ``apt-get update`` (once per process) and ``apt-get install -y``. Installing needs
    root and apt-get; without them missing tools are just reported as None. Never raises.
    """
    global _apt_updated
    missing = [p for p in PACKAGES if not _usable(p)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        if not _apt_updated:
            _apt_updated = _apt("update")
        if not _apt("install", "-y", "--no-install-recommends", *missing):
            for package in missing:  # one unavailable package must not block the others
                _apt("install", "-y", "--no-install-recommends", package)
    return {p: (_dpkg_version(p) or "installed") if _usable(p) else None for p in PACKAGES}


def _system_env() -> dict[str, str]:
    """This environment without the venv's: for the system python3 and the other tools."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", os.defpath).split(os.pathsep) if p != venv_bin
    )
    return env


# ---------------------------------------------------------------------------------------------
# network namespaces


def _run(argv: Sequence[str], timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=_system_env()
    )


def _must(argv: Sequence[str], timeout: float = CMD_TIMEOUT) -> str:
    """Run a setup command; raise RuntimeError with its stderr's last line when it fails."""
    try:
        r = _run(argv, timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"`{' '.join(argv)}`: {exc}") from None
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise RuntimeError(f"`{' '.join(argv)}` failed: {tail}")
    return r.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Namespace:
    """A network namespace with only ``lo`` up, named ``p2panchor<pid>-<hex>``."""

    live: ClassVar[set[Namespace]] = set()
    """Namespaces made and not yet deleted: deleted at exit in case a caller forgot."""

    def __init__(self) -> None:
        self.name = f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.prefix = ["ip", "netns", "exec", self.name]
        """Command prefix that runs a program inside the namespace."""

    def create(self) -> Namespace:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise RuntimeError("network namespaces need root and iproute2 (the ip command)")
        reap_stale()
        _must(["ip", "netns", "add", self.name])
        Namespace.live.add(self)
        _must(["ip", "-n", self.name, "link", "set", "lo", "up"])
        return self

    def pids(self) -> list[int]:
        r = _run(["ip", "netns", "pids", self.name])
        return [int(p) for p in r.stdout.split() if p.isdigit()] if r.returncode == 0 else []

    def sweep(self) -> None:
        """SIGKILL every process in the namespace (all started by us); wait (bounded)."""
        _sweep(self.name)

    def delete(self) -> None:
        """Kill whatever still runs inside, then delete the namespace (idempotent)."""
        if self not in Namespace.live:
            return
        self.sweep()
        _run(["ip", "netns", "del", self.name])
        Namespace.live.discard(self)


def _sweep(name: str) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        r = _run(["ip", "netns", "pids", name])
        pids = [int(p) for p in r.stdout.split() if p.isdigit()] if r.returncode == 0 else []
        if not pids:
            return
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def reap_stale() -> list[str]:
    """Delete the anchor namespaces (and their processes) whose creating process is gone."""
    reaped = []
    for line in _run(["ip", "netns", "list"]).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(NS_PREFIX):
            continue
        pid = name[len(NS_PREFIX) :].partition("-")[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        _sweep(name)
        if _run(["ip", "netns", "del", name]).returncode == 0:
            reaped.append(name)
    return reaped


@atexit.register
def _close_all() -> None:
    for ns in list(Namespace.live):
        ns.delete()


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a process, SIGKILL it if it is still there after STOP_TIMEOUT."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with suppress(OSError):
                stream.close()


def _tail(path: Path) -> str:
    """The last non-empty line of a log file, for one-line errors."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


# ---------------------------------------------------------------------------------------------
# opentracker


def _start_tracker(
    ns: Namespace, root: Path, hashes: Sequence[str], port: int = TRACKER_PORT
) -> subprocess.Popen[bytes]:
    """Start opentracker in ``ns`` on 127.0.0.1:port (TCP and UDP), whitelisting ``hashes``.

    opentracker chroots to ``-d`` and drops to the user ``nobody`` before it reads the
    whitelist, so ``-w`` is relative to ``root`` and both must be readable by anyone. The
    whitelist holds one 40-digit hex info hash per line (and a final newline). Waits until the
    tracker listens and answers an announce of ``hashes[0]`` without a failure reason.
    """
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    whitelist = root / "whitelist.txt"
    whitelist.write_text("".join(f"{h.lower()}\n" for h in hashes))
    whitelist.chmod(0o644)
    log = root.parent / f"{root.name}.log"
    argv = [*ns.prefix, "opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port)]
    argv += ["-d", str(root), "-w", whitelist.name]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=_system_env()
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    answer = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"opentracker exited with status {proc.returncode}: {_tail(log)}")
        try:
            tcp = Path(f"/proc/{proc.pid}/net/tcp").read_text()
        except OSError:
            tcp = ""
        if tcp_listening(tcp, port):
            r = _run([*ns.prefix, SYSTEM_PYTHON, "-c", _PROBE, url, hashes[0]])
            answer = (r.stdout or r.stderr).strip()
            if r.returncode == 0 and "failure" not in answer:
                return proc
        time.sleep(0.05)
    _stop(proc)
    raise RuntimeError(
        f"opentracker did not accept an announce within {START_TIMEOUT:g} s: {answer}"
    )


def opentracker_rate(
    run: Callable[[list[str], str], dict[str, Any]],
    seconds: float,
    concurrency: int,
    *,
    info_hashes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the caller's load generator against an opentracker; return what ``run`` returned.

    Contract: starts opentracker on 127.0.0.1:6969 in a fresh network namespace (only ``lo``
    up), then calls ``run(prefix, url)`` exactly once, in this thread, where

    * ``prefix`` is ``["ip", "netns", "exec", NS]``: ``run`` must start its load generator with
      it, e.g. ``subprocess.run([*prefix, sys.executable, "bench/tracker_load.py",
      "--protocol", "bittorrent", "--url", url, ...])``, because the tracker is reachable from
      inside the namespace only;
    * ``url`` is ``"http://127.0.0.1:6969"`` (no path: announces go to ``url + "/announce"``,
      scrapes to ``url + "/scrape"``; opentracker also answers UDP announces on that port).

    ``seconds`` and ``concurrency`` are the caller's (``run`` already knows them; they are not
    passed on). ``seconds`` bounds the call: if ``run`` has not returned after
    2 * seconds + 120 s, every process in the namespace is killed (the load generator with it)
    and RuntimeError is raised. ``concurrency`` sets the default whitelist size.

    Debian's opentracker is built in whitelist mode: announces of any info hash not in the
    whitelist are answered with a failure reason ("Requested download is not authorized..."),
    which is cheaper than a real answer. The whitelist is ``info_hashes`` (hex) if given, else
    ``bench_info_hashes(max(1000, concurrency))`` (SHA-1 of ``p2pshare-bench-<i>``): a load
    generator should announce those. Raises RuntimeError if the tracker cannot be set up or
    exits during the load; namespace and temp files are removed in every case.
    """
    if seconds <= 0 or concurrency < 1:
        raise ValueError(f"need seconds > 0 and concurrency >= 1 (got {seconds}, {concurrency})")
    missing = [t for t in ("opentracker",) if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} is not installed (see ensure_tools())")
    hashes = list(info_hashes or bench_info_hashes(max(WHITELIST_SIZE, concurrency)))
    ns = Namespace()
    tmp = Path(tempfile.mkdtemp(prefix="p2pshare-opentracker-"))
    proc: subprocess.Popen[bytes] | None = None
    fired = threading.Event()

    def kill_load() -> None:
        fired.set()
        ns.sweep()

    watchdog = threading.Timer(2 * seconds + LOAD_GRACE, kill_load)
    try:
        ns.create()
        proc = _start_tracker(ns, tmp / "tracker", hashes)
        watchdog.start()
        result = run(list(ns.prefix), f"http://127.0.0.1:{TRACKER_PORT}")
        if fired.is_set():
            raise RuntimeError(f"the load generator ran past {2 * seconds + LOAD_GRACE:g} s")
        if proc.poll() is not None:
            raise RuntimeError(f"opentracker exited during the load with status {proc.returncode}")
        return result
    finally:
        watchdog.cancel()
        if proc is not None:
            _stop(proc)
        ns.delete()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the swarm


class BtSwarm:
    """One seeded private torrent of ``path`` in a network namespace; see the module docstring.

    ``workdir`` holds a temp directory of the swarm (torrent, tracker dir, logs, downloads),
    removed on exit; downloads need room for ``count`` copies of the file at a time.
    """

    def __init__(
        self,
        path: Path,
        workdir: Path,
        *,
        piece_size: int = PIECE_SIZE,
        timeout: float = DOWNLOAD_TIMEOUT,
    ) -> None:
        self.path = Path(path).resolve()
        self.workdir = Path(workdir)
        self.piece_size = piece_size
        self.timeout = timeout
        self.size = 0
        self.sha256 = ""
        self.info_hash = ""
        self.torrent = Path()
        self.tmp: Path | None = None
        self._ns = Namespace()
        self._tracker: subprocess.Popen[bytes] | None = None
        self._seeder: subprocess.Popen[bytes] | None = None
        self._calls = 0
        self._next_port = FIRST_DOWNLOADER_PORT
        self.last_durable: list[float] = []
        """each downloader of the last :meth:`download`: its seconds, plus the seconds an fsync
        of its copy took once every downloader had exited (the copies at once, one thread
        each). The clients write through the page cache; some of it reaches the disk before
        the fsync (aria2c stays a second after completing), so this is a lower bound of the
        time to a durable copy."""

    @property
    def announce_url(self) -> str:
        return f"http://127.0.0.1:{TRACKER_PORT}/announce"

    def __enter__(self) -> BtSwarm:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        exponent = piece_exponent(self.piece_size)
        if not self.path.is_file():
            raise RuntimeError(f"not a file: {self.path}")
        for command in ("opentracker", "mktorrent"):
            if shutil.which(command) is None:
                raise RuntimeError(f"{command} is not installed (see ensure_tools())")
        if not BT_CLIENT.is_file() or not _usable("python3-libtorrent"):
            raise RuntimeError(f"{SYSTEM_PYTHON} cannot import libtorrent (python3-libtorrent)")
        self.size = self.path.stat().st_size
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="bt-swarm-", dir=self.workdir))
        self._ns.create()

        self.torrent = self.tmp / f"{self.path.name}.torrent"
        argv = ["mktorrent", "-p", "-d", "-l", str(exponent), "-a", self.announce_url]
        _must([*argv, "-o", str(self.torrent), str(self.path)], MKTORRENT_TIMEOUT)
        self.info_hash = info_hash(self.torrent.read_bytes())
        self.sha256 = _sha256(self.path)

        self._tracker = _start_tracker(self._ns, self.tmp / "tracker", [self.info_hash])
        log = self.tmp / "seeder.log"
        argv = [*self._client_argv("seed", self.path.parent, SEEDER_PORT, SEED_LIFETIME)]
        with log.open("wb") as err:
            self._seeder = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=_system_env()
            )
        assert self._seeder.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        lines = _read_lines({0: self._seeder}, "{", deadline)
        if 0 not in lines:
            why = _tail(log) or f"nothing within {START_TIMEOUT:g} s"
            raise RuntimeError(f"the seeder did not start seeding: {why}")

    def _client_argv(self, role: str, directory: Path, port: int, timeout: float) -> list[str]:
        return [
            *self._ns.prefix,
            SYSTEM_PYTHON,
            str(BT_CLIENT),
            role,
            str(self.torrent),
            str(directory),
            "--port",
            str(port),
            "--timeout",
            f"{timeout:g}",
            "--parent-pipe",
        ]

    def _aria2c_argv(self, directory: Path, port: int, hook: Path) -> list[str]:
        return [
            *self._ns.prefix,
            "aria2c",
            f"--dir={directory}",
            f"--listen-port={port}",
            "--seed-time=0",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--disable-ipv6=true",
            "--file-allocation=none",
            "--bt-max-peers=0",
            "--bt-tracker-connect-timeout=10",
            "--bt-tracker-timeout=10",
            f"--bt-stop-timeout={self.timeout:g}",
            f"--stop={self.timeout:g}",
            f"--stop-with-process={os.getpid()}",
            f"--on-bt-download-complete={hook}",
            "--auto-save-interval=0",
            "--summary-interval=0",
            "--console-log-level=error",
            "--follow-torrent=false",
            str(self.torrent),
        ]

    def download(self, client: str, count: int) -> list[float]:
        """Start ``count`` downloaders of ``client`` at once; return each one's seconds.

        ``client`` is ``"libtorrent"`` (``bt_client.py download``) or ``"aria2c"``. Each starts
        in a fresh directory; its seconds run from just before its process was started to the
        moment it reported the torrent complete with every piece hash-checked: libtorrent's
        JSON line (the torrent is seeding) or the line of aria2c's ``--on-bt-download-complete``
        hook; aria2c must then also exit 0 (``--seed-time=0``: it stops once complete, after
        one more tracker round of ~1 s that is not counted). Every copy's size and the first
        copy's SHA-256 are checked against the original; the copies are removed on return.
        Raises RuntimeError (one line) when a downloader fails, times out or is wrong.
        """
        if client not in CLIENTS:
            raise ValueError(f"unknown client {client!r}: use one of {', '.join(CLIENTS)}")
        if count < 1:
            raise ValueError(f"count must be at least 1: {count}")
        if self.tmp is None or self._seeder is None:
            raise RuntimeError("BtSwarm.download() needs the swarm started (use `with`)")
        if self._seeder.poll() is not None:
            raise RuntimeError(f"the seeder has exited: {_tail(self.tmp / 'seeder.log')}")
        if client == "aria2c" and shutil.which("aria2c") is None:
            raise RuntimeError("aria2c is not installed (see ensure_tools())")
        self._calls += 1
        base = self.tmp / f"download-{self._calls}-{client}"
        hook = self.tmp / "aria2-complete.sh"
        if client == "aria2c" and not hook.exists():
            hook.write_text(_ARIA2_HOOK)
            hook.chmod(0o755)
        procs: dict[int, subprocess.Popen[bytes]] = {}
        starts: dict[int, float] = {}
        logs: dict[int, Path] = {}
        try:
            for i in range(count):
                directory = base / f"{i}"
                directory.mkdir(parents=True)
                port = self._port()
                if client == "libtorrent":
                    argv = self._client_argv("download", directory, port, self.timeout)
                else:
                    argv = self._aria2c_argv(directory, port, hook)
                logs[i] = base / f"{i}.log"
                with logs[i].open("wb") as err:
                    starts[i] = time.monotonic()
                    procs[i] = subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        env=_system_env(),
                    )
            deadline = time.monotonic() + self.timeout
            marker = "{" if client == "libtorrent" else ARIA2_DONE
            done = _read_lines(procs, marker, deadline, needed=self._seeder)
            if self._seeder.poll() is not None:
                why = _tail(self.tmp / "seeder.log") or f"status {self._seeder.returncode}"
                raise RuntimeError(f"the seeder exited during the download: {why}")
            times = []
            for i, proc in procs.items():
                if i not in done:
                    _stop(proc)
                    why = _tail(logs[i]) or f"no completion within {self.timeout:g} s"
                    raise RuntimeError(f"{client} downloader {i} failed: {why}")
                times.append(done[i] - starts[i])
            for i, proc in procs.items():
                try:
                    status = proc.wait(max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    status = None
                if status != 0:
                    why = _tail(logs[i]) or f"exit status {status}"
                    raise RuntimeError(f"{client} downloader {i} did not exit cleanly: {why}")
            copies = [base / f"{i}" / self.path.name for i in procs]
            with ThreadPoolExecutor(len(copies)) as pool:
                flushed = list(pool.map(fsync_seconds, copies))
            self.last_durable = [t + f for t, f in zip(times, flushed, strict=True)]
            self._verify(copies)
            return times
        finally:
            for proc in procs.values():
                _stop(proc)
            shutil.rmtree(base, ignore_errors=True)

    def _port(self) -> int:
        port = self._next_port
        self._next_port = FIRST_DOWNLOADER_PORT + (port + 1 - FIRST_DOWNLOADER_PORT) % 20000
        return port

    def _verify(self, copies: list[Path]) -> None:
        for copy in copies:
            size = copy.stat().st_size if copy.is_file() else -1
            if size != self.size:
                raise RuntimeError(f"{copy} has {size} bytes, the original {self.size}")
        if _sha256(copies[0]) != self.sha256:
            raise RuntimeError(f"{copies[0]} differs from {self.path} (SHA-256)")

    def close(self) -> None:
        """Stop the seeder and tracker, delete the namespace and the temp files (idempotent)."""
        for proc in (self._seeder, self._tracker):
            if proc is not None:
                _stop(proc)
        self._seeder = self._tracker = None
        self._ns.delete()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _read_lines(
    procs: dict[int, subprocess.Popen[bytes]],
    marker: str,
    deadline: float,
    needed: subprocess.Popen[bytes] | None = None,
) -> dict[int, float]:
    """Read the processes' stdout until each printed a line starting with ``marker``.

    Returns key -> time.monotonic() when that line arrived, for those that printed it before
    ``deadline`` (a process whose stdout closed without it is left out). Gives up early if
    ``needed`` (the seeder) exits.
    """
    found: dict[int, float] = {}
    buffers: dict[int, bytes] = {}
    with selectors.DefaultSelector() as sel:
        for key, proc in procs.items():
            assert proc.stdout is not None
            sel.register(proc.stdout, selectors.EVENT_READ, key)
            buffers[key] = b""
        while sel.get_map() and time.monotonic() < deadline:
            if needed is not None and needed.poll() is not None:
                break
            for event, _ in sel.select(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                key = event.data
                stream: IO[bytes] = event.fileobj  # type: ignore[assignment]
                chunk = os.read(stream.fileno(), 65536)
                now = time.monotonic()
                buffers[key] += chunk
                lines = buffers[key].split(b"\n")
                buffers[key] = lines.pop()
                if any(line.decode(errors="replace").startswith(marker) for line in lines):
                    found.setdefault(key, now)
                if not chunk or key in found:
                    sel.unregister(stream)
    return found


def fsync_seconds(path: Path) -> float:
    """Return the seconds an fsync of ``path`` takes (writing what of it is not on disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        started = time.monotonic()
        os.fsync(fd)
        return time.monotonic() - started
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# __main__


def _make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(left, 16 * 1024 * 1024)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())  # no writeback of it during the timed downloads


def _trivial_load(seconds: float, concurrency: int) -> Callable[[list[str], str], dict[str, Any]]:
    """A ``run`` for :func:`opentracker_rate`: a plain announce loop in the system python3."""

    def run(prefix: list[str], url: str) -> dict[str, Any]:
        hashes = ",".join(bench_info_hashes(WHITELIST_SIZE))
        argv = [*prefix, SYSTEM_PYTHON, "-c", _TRIVIAL_LOAD, url, f"{seconds:g}"]
        out = _must([*argv, str(concurrency), hashes], timeout=seconds + 60)
        return dict(json.loads(out))

    return run


def _parse_size(value: str) -> int:
    try:
        from p2pshare.core.sizes import parse_size
    except ImportError:  # run without the project installed: plain bytes only
        return int(value)
    return parse_size(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256MiB", help="size of the random file (256MiB)")
    parser.add_argument("--counts", default="1,3", help="downloaders at once, per run (1,3)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="libtorrent,aria2c")
    parser.add_argument("--piece-size", default="4MiB", help="torrent piece size (4MiB)")
    parser.add_argument(
        "--tracker-seconds", type=float, default=0.0, help="also load opentracker so long"
    )
    parser.add_argument("--tracker-concurrency", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None, help="for the file and copies")
    args = parser.parse_args(argv)
    size = _parse_size(args.size)
    piece_size = _parse_size(args.piece_size)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    tools = ensure_tools()
    print("tools:", ", ".join(f"{k} {v or 'MISSING'}" for k, v in tools.items()))
    if any(v is None for v in tools.values()):
        print("error: a tool is missing (see above)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="p2pshare-anchors-", dir=args.workdir))
    try:
        data = workdir / "anchor.bin"
        _make_file(data, size)
        print(f"file: {size} bytes, pieces of {piece_size} bytes")
        with BtSwarm(data, workdir, piece_size=piece_size) as swarm:
            for count in counts:
                for client in clients:
                    times = swarm.download(client, count)
                    each = "  ".join(f"{t:6.2f} s {mb_per_s(size, t):5.0f} MB/s" for t in times)
                    total = f"   (all: {mb_per_s(count * size, max(times)):.0f} MB/s)"
                    print(f"{client:10s} x{count}: {each}{total if count > 1 else ''}")
        if args.tracker_seconds > 0:
            load = _trivial_load(args.tracker_seconds, args.tracker_concurrency)
            result = opentracker_rate(load, args.tracker_seconds, args.tracker_concurrency)
            print(
                f"opentracker: {result['rate']:.0f} announces/s with {args.tracker_concurrency} "
                f"threads of one CPython client ({result['errors']} errors)"
            )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
