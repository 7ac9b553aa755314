"""p2pshare across hosts: a tracker and nodes each in its own network namespace on a bridge.

Needs root and iproute2 (see :mod:`tests.e2e.netbed`): skipped without them, failed in CI.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.netbed import NetBed, list_namespaces, netbed_or_skip
from tests.integration.network.cluster import make_file, sha256

pytestmark = pytest.mark.timeout(300)

MiB = 1 << 20
CHUNK = 64 * 1024
HOLDERS = ("h1", "h2", "h3", "h4")


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for(what: str, cond: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- the bed itself -----------------------------------------------------------------------


def test_hosts_reach_each_other_until_a_link_is_cut(tmp_path: Path) -> None:
    with netbed_or_skip(["a", "b"], tmp_path) as bed:
        names = {h.ns for h in bed.hosts.values()} | {bed.bridge_ns}
        assert names <= set(list_namespaces())
        shown = bed.run("a", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        assert f"inet {bed.addr('a')}/24" in shown.stdout

        listener = bed.listen("b", 9000)
        bed.listen("a", 9000)
        assert bed.can_connect("a", "b", 9000)
        assert bed.can_connect("b", "a", 9000)

        bed.link_down("b")
        assert not bed.can_connect("a", "b", 9000, timeout=1.0)
        assert not bed.can_connect("b", "a", 9000, timeout=1.0)
        bed.link_up("b")
        wait_for("b to be reachable again", lambda: bed.can_connect("a", "b", 9000), 10)

        bed.cap("a", "8mbit", ingress=True)
        qdiscs = bed.run("a", ["tc", "qdisc", "show", "dev", "eth0"]).stdout
        assert "tbf" in qdiscs and "rate 8Mbit" in qdiscs
        assert bed.can_connect("a", "b", 9000)
        bed.uncap("a")
        assert "tbf" not in bed.run("a", ["tc", "qdisc", "show", "dev", "eth0"]).stdout

        bed.kill_host("b")
        assert listener.poll() is not None
        assert not bed.can_connect("a", "b", 9000, timeout=1.0)
        procs = bed.processes()
    assert bed.leftovers() == []
    assert not names & set(list_namespaces())
    assert all(p.poll() is not None for p in procs)


# -- p2pshare on the bed ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetBed]:
    """A tracker on t, nodes on h1..h4 (all announced); h5 is a spare host, no node yet."""
    with netbed_or_skip(["t", *HOLDERS, "h5"], tmp_path_factory.mktemp("bed")) as b:
        b.start_tracker("t")
        b.start_nodes(*HOLDERS)
        b.wait_online(len(HOLDERS))
        yield b


def upload(bed: NetBed, host: str, src: Path) -> dict[str, object]:
    up = bed.cli_json(
        host, "upload", str(src), "--auto", "--replicas", "2", "--chunk-size", "64KiB"
    )
    assert up["replicas"] == 2
    return up  # type: ignore[no-any-return]


def test_upload_on_one_host_download_on_another(bed: NetBed, tmp_path: Path) -> None:
    size = 4 * MiB + 12345
    src = tmp_path / "across.bin"
    digest = make_file(src, size)
    up = upload(bed, "h1", src)
    assert (up["size"], up["sha256"]) == (size, digest)

    # every chunk is on h1 and two other hosts, reached at their bridge addresses
    detail = bed.tracker_get(f"/v1/files/{up['file_id']}")
    by_id = {n.node_id: name for name, n in bed.nodes.items()}
    held: dict[str, int] = dict.fromkeys(HOLDERS, 0)
    for ch in detail["chunks"]:
        hosts = [by_id[h["node_id"]] for h in ch["holders"]]
        assert len(set(hosts)) == 3 and "h1" in hosts
        for h in ch["holders"]:
            assert h["address"].startswith(f"https://{bed.addr(by_id[h['node_id']])}:7071#")
        for h in hosts:
            held[h] += 1

    # download where the fewest chunks are, so most bytes cross the bridge
    downloader = min(("h2", "h3", "h4"), key=lambda h: held[h])
    out = tmp_path / "out" / src.name
    out.parent.mkdir()
    rx_before, _ = bed.traffic(downloader)
    down = bed.cli_json(downloader, "download", str(up["file_id"]), "-o", str(out))
    rx_after, _ = bed.traffic(downloader)
    assert (down["bytes"], down["sha256"], down["path"]) == (size, digest, str(out))
    assert sha256(out) == digest
    assert not list(out.parent.glob("*.part*"))
    missing = len(detail["chunks"]) - held[downloader]
    assert rx_after - rx_before >= missing * CHUNK * 0.9


def test_a_download_survives_a_holder_cut_off(bed: NetBed, tmp_path: Path) -> None:
    size = 16 * MiB
    src = tmp_path / "partition.bin"
    digest = make_file(src, size)
    up = upload(bed, "h1", src)
    chunks = size // CHUNK

    # the downloader joins after the upload, so it holds nothing and fetches every chunk
    if "h5" not in bed.nodes:
        bed.start_nodes("h5")
    bed.wait_node("h5", online=True)

    out = tmp_path / "out" / src.name
    out.parent.mkdir()
    record = out.with_name(out.name + ".part.jsonl")
    for h in HOLDERS:
        bed.cap(h, "8mbit")  # 1 MB/s each: ~4 s for the whole file at full strength
    cut = False
    try:
        _, h1_sent_before = bed.traffic("h1")
        started = time.monotonic()
        dl = bed.cli_popen("h5", "download", str(up["file_id"]), "-o", str(out))
        wait_for(
            "the download to write its first chunks",
            lambda: lines(record) >= 16 or dl.poll() is not None,
            60,
            every=0.05,
        )
        assert dl.poll() is None, "the download ended before the cut"
        done_at_cut = lines(record)
        assert done_at_cut < chunks
        _, h1_sent = bed.traffic("h1")
        assert h1_sent - h1_sent_before > CHUNK, "h1 served nothing before the cut"
        bed.link_down("h1")
        cut = True
        cut_at = time.monotonic() - started

        went_offline = bed.wait_node("h1", online=False, timeout=20)
        try:
            stdout, stderr = dl.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            dl.kill()
            dl.communicate()
            raise
        total = time.monotonic() - started
        assert dl.returncode == 0, stderr.decode(errors="replace")
        down = json.loads(stdout)
        assert (down["bytes"], down["sha256"]) == (size, digest)
        assert sha256(out) == digest
        assert not list(out.parent.glob("*.part*"))
        print(
            f"\ncut h1 after {cut_at:.1f}s ({done_at_cut}/{chunks} chunks written); "
            f"the tracker saw it offline {went_offline:.1f}s later; "
            f"download done after {total:.1f}s"
        )
    finally:
        if cut:
            bed.link_up("h1")
        for h in HOLDERS:
            bed.uncap(h)

    back = bed.wait_node("h1", online=True, timeout=20)
    print(f"h1 listed online again {back:.1f}s after its link came back")
    assert bed.nodes["h1"].node_id in bed.online_ids()
