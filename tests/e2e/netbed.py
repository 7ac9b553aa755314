"""A multi-host test bed on one Linux machine: network namespaces joined by a bridge.

:class:`NetBed` makes a bridge namespace and one namespace per host, each host joined to the
bridge by a veth pair (``eth0`` in the host, ``p-HOST`` on the bridge) with an address in a
private /24 (``10.77.0.0/24`` by default) and loopback up. Every interface lives inside a
namespace the bed made, so nothing is added to the root namespace and the subnet never meets a
real network; only the namespace names are global, and they carry a per-run prefix
(``p2pbed<pid>-<random>-``) so parallel runs never collide. A run that crashed leaves its
namespaces behind: the next bed deletes those whose creating process is gone
(:func:`reap_stale`).

Processes run in a host with ``ip netns exec``; the bed can kill them (:meth:`NetBed.kill_host`),
cut a host's link (:meth:`NetBed.link_down` / :meth:`NetBed.link_up`) and cap its bandwidth with
a tbf qdisc (:meth:`NetBed.cap`). On top of that it runs p2pshare the way a user does: a tracker
(:meth:`NetBed.start_tracker`) and nodes (:meth:`NetBed.start_nodes`) on the hosts' addresses,
the CLI inside a node's namespace (:meth:`NetBed.cli`, whose control API is on that namespace's
loopback), and GETs to the tracker (:meth:`NetBed.tracker_get`, run from the tracker's own
namespace, so it works whatever links are down).

:meth:`NetBed.close` (also run at exit, in case a caller forgot) kills every process the bed
started and deletes every namespace it made, which takes the veth pairs and the bridge with
them. Building a bed needs root and iproute2; without them it raises
:class:`NetBedUnavailable`, which :func:`netbed_or_skip` turns into a skip, or into a failure
when the ``CI`` environment variable is set.

Benchmarks use it as ``from tests.e2e.netbed import NetBed`` (with the repository root on
``sys.path``)::

    with NetBed(["t", "h1", "h2"], Path("/tmp/bed")) as bed:
        bed.start_tracker("t")
        bed.start_nodes("h1", "h2")
        bed.wait_online(2)
        up = bed.cli_json("h1", "upload", "FILE", "--auto")
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tests.integration.network.cluster import (
    CLI_TIMEOUT,
    HEARTBEAT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Node,
    Proc,
    _clean_env,
    _read_line,
)

NAME_PREFIX = "p2pbed"
_STALE_RE = re.compile(rf"^{NAME_PREFIX}(\d+)-[0-9a-f]+-")
_HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
"""Host names: short enough that ``p-HOST`` fits the 15 characters of an interface name."""
BRIDGE_NS = "bridge"
BRIDGE_DEV = "br0"
HOST_DEV = "eth0"

TRACKER_PORT = 7070
PEER_PORT = 7071
CONTROL_PORT = 7072
CMD_TIMEOUT = 15.0
"""Bound on one ``ip``/``tc`` command."""
SWEEP_TIMEOUT = 5.0
"""Bound on waiting for killed processes to leave a namespace."""

_GET = """\
import ssl, sys, urllib.error, urllib.request
tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE  # a test reading the tracker's catalogue
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]), context=tls)
except urllib.error.HTTPError as e:
    r = e
sys.stdout.buffer.write(r.read())
"""

_CONNECT = """\
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as e:
    print(e)
    sys.exit(1)
"""

_LISTEN = """\
import socket, sys, time
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.5)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        c, _ = s.accept()
    except OSError:
        continue
    c.close()
"""


class NetBedUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, not permitted)."""


def in_ci() -> bool:
    """True when the ``CI`` environment variable says this is a CI run."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _run(argv: Sequence[str], timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def _must(argv: Sequence[str]) -> str:
    """Run a setup command; raise RuntimeError with its stderr when it fails."""
    try:
        r = _run(argv)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"`{' '.join(argv)}`: {exc}") from None
    if r.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {r.stderr.strip()}")
    return r.stdout


def list_namespaces() -> list[str]:
    """Return the names of the named network namespaces (``ip netns list``)."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _ns_pids(ns: str) -> list[int]:
    r = _run(["ip", "netns", "pids", ns])
    return [int(p) for p in r.stdout.split() if p.isdigit()] if r.returncode == 0 else []


def _sweep(ns: str) -> list[int]:
    """SIGKILL every process in namespace ``ns`` and wait (bounded) until none is left.

    Only ever called on namespaces a bed made: whatever runs there was started by a bed.
    Returns the pids still there at the deadline.
    """
    deadline = time.monotonic() + SWEEP_TIMEOUT
    left = _ns_pids(ns)
    while left and time.monotonic() < deadline:
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        left = _ns_pids(ns)
    return left


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Delete the namespaces (and their processes) of beds whose creating process is gone.

    Returns the names deleted.
    """
    reaped = []
    for ns in list_namespaces():
        m = _STALE_RE.match(ns)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        _sweep(ns)
        if _run(["ip", "netns", "del", ns]).returncode == 0:
            reaped.append(ns)
    return reaped


@dataclass(frozen=True)
class Host:
    """One host of the bed: its namespace, address and the bridge's port to it."""

    name: str
    ns: str
    address: str
    bridge_port: str


class NetBed:
    """A bridge and named hosts in network namespaces, and p2pshare processes on them.

    Use it as a context manager (or call :meth:`up` then :meth:`close`). ``root`` holds the
    processes' logs and data dirs; ``subnet`` is the first three octets of the hosts' /24
    (hosts get ``.1``, ``.2``, ... in the order given).
    """

    def __init__(self, hosts: Sequence[str], root: Path, *, subnet: str = "10.77.0") -> None:
        if len(set(hosts)) != len(hosts) or not 1 <= len(hosts) <= 250:
            raise ValueError(f"give 1 to 250 distinct host names, not {list(hosts)}")
        for h in hosts:
            if not _HOST_RE.match(h) or h == BRIDGE_NS:
                raise ValueError(f"bad host name {h!r}: [a-z][a-z0-9]*, at most 12 characters")
        self.root = root
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.bridge_ns = f"{self.prefix}-{BRIDGE_NS}"
        self.hosts = {
            h: Host(h, f"{self.prefix}-{h}", f"{subnet}.{i}", f"p-{h}")
            for i, h in enumerate(hosts, start=1)
        }
        env = _clean_env()
        env["XDG_CONFIG_HOME"] = str(root / "xdg" / "config")
        env["XDG_DATA_HOME"] = str(root / "xdg" / "data")
        self.env = env
        """The environment of every process the bed starts (no P2PSHARE_*, no user config)."""
        self.tracker: Proc | None = None
        self.tracker_host: str | None = None
        self.nodes: dict[str, Node] = {}
        self._made: list[str] = []
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._up = False
        self._closed = False

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> NetBed:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def up(self) -> NetBed:
        """Make the namespaces, the bridge and the veth pairs; raise NetBedUnavailable when
        this machine cannot (after removing whatever was made)."""
        if self._up:
            return self
        if self._closed:
            raise RuntimeError("this bed was closed; make a new one")
        if not sys.platform.startswith("linux"):
            raise NetBedUnavailable(f"network namespaces need Linux, not {sys.platform}")
        if shutil.which("ip") is None:
            raise NetBedUnavailable("the `ip` command (iproute2) is not installed")
        if os.geteuid() != 0:
            raise NetBedUnavailable(
                f"making network namespaces needs root (running as uid {os.geteuid()})"
            )
        reap_stale()
        self.root.mkdir(parents=True, exist_ok=True)
        self._up = True
        atexit.register(self.close)
        try:
            self._build()
        except RuntimeError as exc:
            self.close()
            raise NetBedUnavailable(f"cannot build the network: {exc}") from None
        except BaseException:
            self.close()
            raise
        return self

    def _add_ns(self, ns: str) -> None:
        _must(["ip", "netns", "add", ns])
        self._made.append(ns)
        _must(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _build(self) -> None:
        br = self.bridge_ns
        self._add_ns(br)
        _must(["ip", "-n", br, "link", "add", BRIDGE_DEV, "type", "bridge"])
        _must(["ip", "-n", br, "link", "set", BRIDGE_DEV, "up"])
        for h in self.hosts.values():
            self._add_ns(h.ns)
            veth = ["type", "veth", "peer", "name", HOST_DEV, "netns", h.ns]
            _must(["ip", "-n", br, "link", "add", h.bridge_port, *veth])
            _must(["ip", "-n", br, "link", "set", h.bridge_port, "master", BRIDGE_DEV, "up"])
            _must(["ip", "-n", h.ns, "addr", "add", f"{h.address}/24", "dev", HOST_DEV])
            _must(["ip", "-n", h.ns, "link", "set", HOST_DEV, "up"])

    def close(self) -> None:
        """Stop every process the bed started and delete every namespace it made.

        Never raises: what could not be removed is reported on stderr (see :meth:`leftovers`).
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        problems: list[str] = []
        alive = [p for _, p in self._procs if p.poll() is None]
        for p in alive:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for p in alive:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()  # and the sweep below waits for it
        for _, p in self._procs:
            for stream in (p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
        for ns in reversed(self._made):
            try:
                if left := _sweep(ns):
                    problems.append(f"processes {left} would not leave {ns}")
                r = _run(["ip", "netns", "del", ns])
            except (OSError, subprocess.SubprocessError) as exc:
                problems.append(f"{ns}: {exc}")
                continue
            if r.returncode != 0:
                problems.append(f"`ip netns del {ns}`: {r.stderr.strip()}")
        for _, p in self._procs:
            with suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1.0)  # reap what the sweep killed
        if problems:
            print("netbed: cleanup incomplete: " + "; ".join(problems), file=sys.stderr)

    def leftovers(self) -> list[str]:
        """Return the namespaces of this bed that still exist (none after :meth:`close`)."""
        return [ns for ns in list_namespaces() if ns.startswith(f"{self.prefix}-")]

    # -- hosts ----------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def addr(self, name: str) -> str:
        """The host's address on the bridge."""
        return self.hosts[name].address

    def _exec(self, host: str, argv: Sequence[str]) -> list[str]:
        if not self._up or self._closed:
            raise RuntimeError("the bed is not up")
        return ["ip", "netns", "exec", self.hosts[host].ns, *argv]

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        timeout: float = CLI_TIMEOUT,
        input: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host`` to its end; return its outcome (text stdout/stderr)."""
        return subprocess.run(
            self._exec(host, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=self.env,
            check=check,
        )

    def popen(
        self,
        host: str,
        argv: Sequence[str],
        *,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``host`` in the background; the bed stops it on close."""
        p = subprocess.Popen(
            self._exec(host, argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=self.env,
        )
        self._procs.append((host, p))
        return p

    def processes(self, host: str | None = None) -> list[subprocess.Popen[bytes]]:
        """The processes the bed started (on ``host``, or on any), running or not."""
        return [p for h, p in self._procs if host is None or h == host]

    def python(
        self, host: str, code: str, *args: str, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code args...`` in ``host``."""
        return self.run(host, [sys.executable, "-c", code, *args], timeout=timeout)

    def kill_host(self, host: str) -> None:
        """SIGKILL every process running in ``host`` (all of which the bed started)."""
        for h, p in self._procs:
            if h == host and p.poll() is None:
                p.kill()
        _sweep(self.hosts[host].ns)
        for h, p in self._procs:
            if h == host:
                p.wait(timeout=STOP_TIMEOUT)

    def link_down(self, host: str) -> None:
        """Cut ``host`` off the bridge (its eth0 down; its processes keep running)."""
        _must(["ip", "-n", self.hosts[host].ns, "link", "set", HOST_DEV, "down"])

    def link_up(self, host: str) -> None:
        """Put ``host`` back on the bridge."""
        _must(["ip", "-n", self.hosts[host].ns, "link", "set", HOST_DEV, "up"])

    def cap(
        self,
        host: str,
        rate: str,
        *,
        ingress: bool = False,
        burst: str = "64kb",
        latency: str = "200ms",
    ) -> None:
        """Cap what ``host`` sends to ``rate`` (a tc rate: "8mbit", "1mbps") with tbf on its
        eth0; with ``ingress``, also what it receives (tbf on the bridge's port to it)."""
        if shutil.which("tc") is None:
            raise RuntimeError("the `tc` command (iproute2) is not installed")
        h = self.hosts[host]
        tbf = ["root", "tbf", "rate", rate, "burst", burst, "latency", latency]
        _must(["tc", "-n", h.ns, "qdisc", "replace", "dev", HOST_DEV, *tbf])
        if ingress:
            _must(["tc", "-n", self.bridge_ns, "qdisc", "replace", "dev", h.bridge_port, *tbf])

    def uncap(self, host: str) -> None:
        """Remove the caps of :meth:`cap` (both directions; a missing one is fine)."""
        h = self.hosts[host]
        _run(["tc", "-n", h.ns, "qdisc", "del", "dev", HOST_DEV, "root"])
        _run(["tc", "-n", self.bridge_ns, "qdisc", "del", "dev", h.bridge_port, "root"])

    def traffic(self, host: str) -> tuple[int, int]:
        """Bytes ``host`` has received and sent on its link so far: (rx, tx)."""
        out = _must(["ip", "-n", self.hosts[host].ns, "-j", "-s", "link", "show", "dev", HOST_DEV])
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])

    def can_connect(self, src: str, dst: str, port: int, timeout: float = 1.0) -> bool:
        """True when a TCP connection from ``src`` to ``dst``:``port`` succeeds in time."""
        r = self.python(src, _CONNECT, self.addr(dst), str(port), str(timeout))
        return r.returncode == 0

    def listen(self, host: str, port: int, seconds: float = 60.0) -> subprocess.Popen[bytes]:
        """Start a TCP server on ``host``:``port`` that accepts (and closes) connections for
        ``seconds``; return once it listens."""
        p = self.popen(
            host,
            [sys.executable, "-c", _LISTEN, self.addr(host), str(port), str(seconds)],
            stdout=subprocess.PIPE,
        )
        assert p.stdout is not None
        if _read_line(p.stdout, START_TIMEOUT) != b"ready":
            p.kill()
            raise RuntimeError(f"the test listener on {host}:{port} did not start")
        return p

    # -- p2pshare processes ---------------------------------------------------------------

    def _launch(self, host: str, label: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "p2pshare", "--json", *args]
        with (self.root / f"{label}.log").open("ab") as log:
            return self.popen(host, cmd, stdout=subprocess.PIPE, stderr=log)

    def _ready(self, label: str, args: Sequence[str], popen: subprocess.Popen[bytes]) -> Proc:
        log_path = self.root / f"{label}.log"
        assert popen.stdout is not None
        line = _read_line(popen.stdout, START_TIMEOUT)
        if not line:
            popen.kill()
            popen.wait()
            raise RuntimeError(f"{label} did not start: {log_path.read_text(errors='replace')}")
        return Proc(label, list(args), popen, log_path, json.loads(line))

    def start_tracker(self, host: str = "t", *extra: str, port: int = TRACKER_PORT) -> Proc:
        """Start the tracker on ``host`` (heartbeat every second); return it once it listens."""
        args = ["tracker", "--host", self.addr(host), "--port", str(port)]
        args += ["--data", str(self.root / host / "tracker")]
        args += ["--heartbeat-interval", str(HEARTBEAT), *extra]
        self.tracker = self._ready("tracker", args, self._launch(host, "tracker", args))
        self.tracker_host = host
        return self.tracker

    @property
    def tracker_url(self) -> str:
        assert self.tracker is not None, "start_tracker first"
        return str(self.tracker.ready["listening"])

    def start_nodes(
        self, *hosts: str, storage: str = "1GiB", extra: Sequence[str] = ()
    ) -> list[Node]:
        """Start (or restart, on the same data dir) a node named after each host, all at once;
        return them once each has said it is ready (they announce on their own)."""
        launched = []
        for host in hosts:
            args = ["node", "--host", self.addr(host), "--name", host, "--storage", storage]
            args += ["--port", str(PEER_PORT), "--control-port", str(CONTROL_PORT)]
            args += ["--data", str(self.root / host), "--tracker", self.tracker_url, *extra]
            launched.append((host, args, self._launch(host, host, args)))
        started = []
        for host, args, popen in launched:
            node = Node(host, self.root / host, self._ready(host, args, popen), storage)
            self.nodes[host] = node
            started.append(node)
        return started

    # -- the tracker's view ---------------------------------------------------------------

    def tracker_get(self, path: str, timeout: float = 10.0, **params: Any) -> Any:
        """GET ``path`` from the tracker (from inside its namespace); return the decoded JSON
        of the answer, whatever its status."""
        assert self.tracker_host is not None, "start_tracker first"
        url = f"{self.tracker_url.partition('#')[0]}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        r = self.python(self.tracker_host, _GET, url, str(timeout), timeout=timeout + 10)
        if r.returncode != 0:
            raise RuntimeError(f"GET {url} failed: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def online_ids(self) -> set[str]:
        """The ids of the nodes the tracker lists as online."""
        items = self.tracker_get("/v1/nodes", online="true", limit=500)["items"]
        return {n["node_id"] for n in items}

    def wait_online(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the tracker lists ``count`` online nodes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.online_ids()) == count:
                return
            time.sleep(0.2)
        raise AssertionError(f"the tracker never listed {count} online nodes")

    def wait_node(self, host: str, online: bool = True, timeout: float = 30.0) -> float:
        """Wait until the tracker lists the node of ``host`` as online (or not); return the
        seconds it took."""
        started = time.monotonic()
        node_id = self.nodes[host].node_id
        while time.monotonic() - started < timeout:
            if (node_id in self.online_ids()) == online:
                return time.monotonic() - started
            time.sleep(0.2)
        state = "online" if online else "offline"
        raise AssertionError(f"the tracker never listed {host} as {state}")

    # -- the CLI --------------------------------------------------------------------------

    def _cli_cmd(self, host: str, args: Sequence[str]) -> list[str]:
        control = self.nodes[host].control_url
        return [sys.executable, "-m", "p2pshare", "--json", *args, "--node", control]

    def cli(
        self, host: str, *args: str, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``p2pshare --json ARGS --node CONTROL`` in ``host`` against its node."""
        return self.run(host, self._cli_cmd(host, args), timeout=timeout)

    def cli_json(self, host: str, *args: str, timeout: float = CLI_TIMEOUT) -> Any:
        """Run the CLI, require exit code 0, and return its JSON document."""
        r = self.cli(host, *args, timeout=timeout)
        assert r.returncode == 0, f"{host}: {args}: exit {r.returncode}: {r.stderr}"
        return json.loads(r.stdout)

    def cli_popen(self, host: str, *args: str) -> subprocess.Popen[bytes]:
        """Start the CLI in the background (stdout and stderr piped: use communicate())."""
        return self.popen(
            host, self._cli_cmd(host, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )


@contextmanager
def netbed_or_skip(
    hosts: Sequence[str], root: Path, *, subnet: str = "10.77.0"
) -> Iterator[NetBed]:
    """For pytest fixtures: yield an up :class:`NetBed` and close it afterwards, whatever
    happens. When this machine cannot make one, skip the test with the reason, or fail it
    when ``CI`` is set (CI must never skip these tests silently)."""
    import pytest

    bed = NetBed(hosts, root, subnet=subnet)
    reason = None
    try:
        bed.up()
    except NetBedUnavailable as exc:
        reason = f"network test bed unavailable: {exc}"
    if reason is not None:
        if in_ci():
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    try:
        yield bed
    finally:
        bed.close()
