"""``p2pshare demo``: a tracker and three nodes on loopback, a real upload and download.

Every part runs as its own process, exactly as a user would start it; their logs go to files
in a temp dir. After the transfers the network keeps running, with the commands to try printed,
until ctrl-C, which stops every process the demo started and removes the temp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import aiohttp
from rich.console import Console

from p2pshare.cli.transfer_cmds import follow, print_download_summary, print_upload_summary
from p2pshare.core.errors import P2PShareError, Unavailable
from p2pshare.core.links import encode_key, parse_link
from p2pshare.core.node_messages import DownloadRequest, UploadRequest
from p2pshare.node.control_client import ControlClient
from p2pshare.node.http import prepare, url_of

NODES = ("alpha", "bravo", "charlie")
DEMO_SIZE = 64 * 2**20
START_TIMEOUT = 30.0


def free_port() -> int:
    """Return a TCP port on loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """The processes of the demo, and how to stop them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, label: str, *args: str) -> None:
        log = (self.root / f"{label}.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "p2pshare", "--env", "development", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # ctrl-C reaches the demo, which stops them in order
        )
        self.procs.append((label, proc, log))

    def check_alive(self) -> None:
        for label, proc, _ in self.procs:
            if proc.poll() is not None:
                tail = (self.root / f"{label}.log").read_text(errors="replace")[-600:]
                raise P2PShareError(f"{label} exited with code {proc.returncode}: {tail.strip()}")

    def stop(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc, log in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


async def wait_http(url: str, cluster: Cluster) -> None:
    """Wait until ``url`` answers 200, or fail after a bounded time."""
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while time.monotonic() < deadline:
            cluster.check_alive()
            req = prepare("GET", url)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.get(req.url, ssl=req.ssl) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise Unavailable(f"{url} did not come up within {START_TIMEOUT:.0f}s")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while piece := fh.read(4 << 20):
            digest.update(piece)
    return digest.hexdigest()


async def _start(root: Path, cluster: Cluster, console: Console) -> dict[str, str]:
    """Start the tracker and the nodes; return each node's control URL once all answer."""
    from p2pshare.tracker.server import tracker_url as url_of_tracker
    from p2pshare.tracker.settings import TrackerSettings

    tracker_port = free_port()
    # the tracker's key is made now, so its URL (with the certificate pin) is known up front
    tracker_url = await asyncio.to_thread(
        url_of_tracker, TrackerSettings(data_dir=root / "tracker"), "127.0.0.1", tracker_port
    )
    cluster.start(
        "tracker",
        "tracker",
        "--port",
        str(tracker_port),
        "--data",
        str(root / "tracker"),
        "--heartbeat-interval",
        "2",
    )
    console.print(f"tracker   {tracker_url}")
    await wait_http(url_of(tracker_url, "/v1/health"), cluster)
    controls: dict[str, str] = {}
    for name in NODES:
        port, control = free_port(), free_port()
        cluster.start(
            name,
            "node",
            "--name",
            name,
            "--port",
            str(port),
            "--control-port",
            str(control),
            "--data",
            str(root / name),
            "--tracker",
            tracker_url,
            "--storage",
            "1GiB",
        )
        controls[name] = f"http://127.0.0.1:{control}"
        console.print(f"node      {name:<8} https://127.0.0.1:{port}  (control {controls[name]})")
    for name in NODES:
        await wait_http(f"{controls[name]}/v1/control/status", cluster)
    return controls


def _exercise(root: Path, cluster: Cluster, controls: dict[str, str], console: Console) -> None:
    """Upload on alpha, download on charlie, compare; then keep the network up until ctrl-C."""
    source = root / "demo-64MiB.bin"
    _write_random(source, DEMO_SIZE)
    alpha = ControlClient(controls["alpha"])
    deadline = time.monotonic() + START_TIMEOUT
    while len(alpha.peers()) < len(NODES) - 1:  # wait for the others' heartbeats
        if time.monotonic() > deadline:
            raise Unavailable("the nodes did not all announce themselves in time")
        time.sleep(0.3)
    # one copy besides alpha's, so bravo and charlie each hold about half of the chunks and
    # charlie's download has to fetch the rest from the others
    console.rule("encrypted upload on alpha (--auto --encrypt, 1 replica besides alpha)")
    info = alpha.start_upload(UploadRequest(path=str(source), replicas=1, encrypt=True))
    uploaded = follow(alpha, info, show=True, console=console)
    print_upload_summary(console, uploaded)

    console.rule("download on charlie")
    charlie = ControlClient(controls["charlie"])
    target = root / "charlie-downloads" / source.name
    target.parent.mkdir()
    link = parse_link(uploaded.share_link)  # the key travels only in the link
    key = encode_key(link.key) if link.key is not None else None
    info = charlie.start_download(DownloadRequest(file_id=link.file_id, path=str(target), key=key))
    downloaded = follow(charlie, info, show=True, console=console)
    print_download_summary(console, downloaded)

    original, copy = _sha256(source), _sha256(target)
    verdict = "[green]match[/green]" if original == copy else "[red]DIFFER[/red]"
    console.rule("result")
    console.print(f"sha256 of the original   {original}")
    console.print(f"sha256 of the download   {copy}   {verdict}")
    if original != copy:
        raise P2PShareError("the downloaded file differs from the original")
    me = (
        f"{Path(sys.executable).parent}/p2pshare" if "VIRTUAL_ENV" not in os.environ else "p2pshare"
    )
    console.rule("the network keeps running; try, in another terminal")
    console.print(f"{me} peers --node {controls['alpha']}")
    console.print(f"{me} files --node {controls['alpha']}")
    console.print(f"{me} info {uploaded.file_id} --node {controls['bravo']}")
    console.print(
        f"{me} download '{uploaded.share_link}' -o /tmp/copy.bin --node {controls['bravo']}"
    )
    console.print(f"{me} upload SOME_FILE --auto --node {controls['bravo']}")
    console.print(f"logs: {root}/*.log     press ctrl-C to stop everything")
    while True:
        cluster.check_alive()
        time.sleep(1)


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, 4 << 20)
            fh.write(os.urandom(n))
            left -= n


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Besides ctrl-C (SIGINT), the signals that stop the demo and its processes."""


def run_demo(console: Console) -> None:
    """Run the demo until ctrl-C; always stop the processes and remove the temp dir."""
    root = Path(tempfile.mkdtemp(prefix="p2pshare-demo-"))
    cluster = Cluster(root)
    # a kill or a closed terminal stops the demo like ctrl-C: its processes run in sessions
    # of their own (so ctrl-C reaches only the demo) and would be left running otherwise
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in STOP_SIGNALS}
    try:
        controls = asyncio.run(_start(root, cluster, console))
        _exercise(root, cluster, controls, console)
    except KeyboardInterrupt:
        console.print("\nstopping the demo network...")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print("stopped; every demo process has exited")
