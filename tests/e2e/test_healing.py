"""Healing across hosts: repair after churn, audits, swarming under a bandwidth cap, leaving and
withdrawing, with every process on its own namespaced host (see :mod:`tests.e2e.netbed`).

The same scenarios pass on loopback (``tests/integration/network``); here every chunk crosses
a real (virtual) link, a killed host takes all its processes with it, and caps are tbf qdiscs.
Needs root and iproute2: skipped without them, failed in CI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.netbed import NetBed, netbed_or_skip
from tests.integration.network.cluster import make_file, sha256

pytestmark = pytest.mark.timeout(300)

MiB = 1 << 20
CHUNK = 64 * 1024

REPAIR_GRACE = 2
"""Seconds a silent holder is still counted before its chunks are copied (tracker flag)."""
REPAIR_DEADLINE = 45.0
"""Seconds after a kill by which every chunk must be back at its target: 3 heartbeats (1 s)
to be offline + the grace + a repair round (<= 1 s) + the source's next announce + the copies,
with room for a 2-core machine running a dozen processes."""
AUDIT_DEADLINE = 60.0
"""Seconds after a byte is flipped by which an audit must have found it and the chunk be
repaired: audits every 1 s challenge up to 16 of at most 64 drawn replicas, so a bed holding a
few hundred replicas draws the bad one within seconds; then a repair round and a copy."""
LEAVE_TIMEOUT = 60.0
"""Seconds `p2pshare leave` may take to copy a holder's chunks away and stop its node."""
EXIT_TIMEOUT = 30.0
"""Seconds the leaving node's process may take to exit once `leave` returned."""
RECLAIM_DEADLINE = 30.0
"""Seconds after `delete` by which every holder must have deleted the file's chunks: one
repair round to find them + each holder's next announce (1 s) + the deletion, with room."""
SWARM_TIMEOUT = 150.0
"""Seconds the four capped swarm downloads may take in all (the seeder alone would need
4 x 8 MiB / 2 MB/s = 17 s; swarming needs less)."""
SWARM_RATE = "16mbit"
"""The upload cap of every swarm host (tbf on its link): 2 MB/s."""


# -- helpers ------------------------------------------------------------------------------


def wait_for(what: str, cond: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll ``cond`` until it returns something truthy; return that (fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def detail(bed: NetBed, file_id: str) -> dict[str, Any]:
    d = bed.tracker_get(f"/v1/files/{file_id}")
    assert "chunks" in d, d
    return d  # type: ignore[no-any-return]


def names_by_id(bed: NetBed) -> dict[str, str]:
    return {n.node_id: host for host, n in bed.nodes.items()}


def live_holders(ch: dict[str, Any], dead: set[str]) -> list[str]:
    """The ids of a chunk's online holders, without those in ``dead``."""
    return [h["node_id"] for h in ch["holders"] if h["online"] and h["node_id"] not in dead]


def at_target(d: dict[str, Any], dead: set[str]) -> bool:
    return all(len(set(live_holders(ch, dead))) >= d["replica_target"] for ch in d["chunks"])


def repaired(bed: NetBed, file_id: str, dead: set[str]) -> dict[str, Any] | None:
    """The file's detail once every chunk is at its target without ``dead``, else None."""
    d = detail(bed, file_id)
    return d if at_target(d, dead) else None


def held_counts(d: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ch in d["chunks"]:
        for h in ch["holders"]:
            counts[h["node_id"]] = counts.get(h["node_id"], 0) + 1
    return counts


def upload(bed: NetBed, host: str, src: Path, replicas: int, chunk: str = "64KiB") -> str:
    up = bed.cli_json(
        host, "upload", str(src), "--auto", "--replicas", str(replicas), "--chunk-size", chunk
    )
    assert up["replicas"] == replicas
    return str(up["file_id"])


def download(bed: NetBed, host: str, file_id: str, out: Path) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    return bed.cli_json(host, "download", file_id, "-o", str(out))  # type: ignore[no-any-return]


_STATUS = """\
import sys, urllib.request
sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=10).read())
"""


def status(bed: NetBed, host: str) -> dict[str, Any]:
    """The node's own status, from its control API on its namespace's loopback."""
    r = bed.python(host, _STATUS, f"{bed.nodes[host].control_url}/v1/control/status")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def alive(bed: NetBed, host: str) -> bool:
    return host in bed.nodes and bed.nodes[host].proc.alive


def least_holding(bed: NetBed, d: dict[str, Any], hosts: tuple[str, ...], skip: set[str]) -> str:
    """The running node among ``hosts`` (not in ``skip``) that holds the fewest of the file's
    chunks: its download fetches the most over the bridge."""
    counts = held_counts(d)
    ok = [h for h in hosts if alive(bed, h) and h not in skip]
    return min(ok, key=lambda h: counts.get(bed.nodes[h].node_id, 0))


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def chunk_sizes(size: int, chunk: int, count: int) -> list[int]:
    return [min(chunk, size - i * chunk) for i in range(count)]


# -- churn: killed holders are replaced ---------------------------------------------------

CHURN_HOSTS = ("h1", "h2", "h3", "h4", "h5", "h6")


def test_killed_holders_are_replaced_and_a_newcomer_downloads(tmp_path: Path) -> None:
    with netbed_or_skip(["t", *CHURN_HOSTS, "j"], tmp_path / "bed") as bed:
        bed.start_tracker("t", "--repair-grace", str(REPAIR_GRACE))
        bed.start_nodes(*CHURN_HOSTS)
        bed.wait_online(len(CHURN_HOSTS))
        size = 4 * MiB + 4321
        src = tmp_path / "churn.bin"
        digest = make_file(src, size)
        file_id = upload(bed, "h1", src, replicas=1)
        d = detail(bed, file_id)
        assert d["replica_target"] == 2
        assert len(d["chunks"]) == -(-size // CHUNK)
        assert at_target(d, set())
        name = names_by_id(bed)
        owner = bed.nodes["h1"].node_id

        dead: set[str] = set()
        took = []
        for _ in range(2):
            # kill the host holding the most chunks, never the owner
            counts = held_counts(d)
            victim = max(
                (n for n in counts if n != owner and n not in dead), key=counts.__getitem__
            )
            under = sum(1 for ch in d["chunks"] if victim in live_holders(ch, dead))
            assert under > 0
            bed.kill_host(name[victim])
            dead.add(victim)
            started = time.monotonic()
            d = wait_for(
                f"every chunk back at 2 live replicas after killing {name[victim]}",
                lambda: repaired(bed, file_id, dead),
                REPAIR_DEADLINE,
            )
            took.append(time.monotonic() - started)
            for ch in d["chunks"]:
                live = live_holders(ch, dead)
                assert len(live) == len(set(live)) >= 2
                for n in live:  # the new copies are real files on the new holders' disks
                    assert bed.nodes[name[n]].chunk_path(ch["chunk_id"]).is_file()
            print(f"\n{name[victim]} killed ({under} chunks under target): ", end="")
            print(f"repaired in {took[-1]:.1f}s")

        # a host that joins after the repairs downloads the file intact from the survivors
        bed.start_nodes("j")
        bed.wait_node("j", online=True)
        down = download(bed, "j", file_id, tmp_path / "out" / "churn.bin")
        assert down["sha256"] == digest == sha256(tmp_path / "out" / "churn.bin")
        assert sum(s["chunks"] for s in down["sources"]) == len(d["chunks"])
        assert not {s["node_id"] for s in down["sources"]} & dead
        assert all(t < REPAIR_DEADLINE for t in took)


# -- swarm: downloaders serve each other under a cap --------------------------------------

DOWNLOADERS = ("d1", "d2", "d3", "d4")
SWARM_SIZE = 8 * MiB + 77


def test_capped_downloaders_serve_each_other(tmp_path: Path) -> None:
    with netbed_or_skip(["t", "up", "s", *DOWNLOADERS], tmp_path / "bed") as bed:
        # a long grace: the uploader's death must not make the tracker copy anything, so the
        # seeder stays the one online holder until the downloads begin
        bed.start_tracker("t", "--repair-grace", "600")
        bed.start_nodes("up", "s")
        bed.wait_online(2)
        src = tmp_path / "popular.bin"
        digest = make_file(src, SWARM_SIZE)
        file_id = upload(bed, "up", src, replicas=1, chunk="256KiB")
        bed.kill_host("up")
        bed.wait_node("up", online=False)
        seeder = bed.nodes["s"].node_id
        d = detail(bed, file_id)
        for ch in d["chunks"]:
            assert live_holders(ch, set()) == [seeder]
        # the downloaders join now, so they hold nothing
        bed.start_nodes(*DOWNLOADERS)
        bed.wait_online(1 + len(DOWNLOADERS))
        for h in ("s", *DOWNLOADERS):
            bed.cap(h, SWARM_RATE)

        for h in DOWNLOADERS:
            (tmp_path / h).mkdir()
        started = time.monotonic()
        procs = {
            h: bed.cli_popen(h, "download", file_id, "-o", str(tmp_path / h / "popular.bin"))
            for h in DOWNLOADERS
        }
        results = {}
        for h, p in procs.items():
            out, err = p.communicate(timeout=max(1.0, SWARM_TIMEOUT - (time.monotonic() - started)))
            assert p.returncode == 0, f"{h}: {err.decode(errors='replace')}"
            results[h] = json.loads(out)
        took = time.monotonic() - started

        ids = {bed.nodes[h].node_id: h for h in DOWNLOADERS}
        from_peers = {}
        for h, res in results.items():
            assert res["sha256"] == digest == sha256(tmp_path / h / "popular.bin")
            assert sum(s["chunks"] for s in res["sources"]) == len(d["chunks"])
            assert {s["node_id"] for s in res["sources"]} <= {seeder, *ids}
            from_peers[h] = sum(s["chunks"] for s in res["sources"] if s["node_id"] in ids)
        print(f"\nswarm done in {took:.1f}s; chunks from other downloaders: {from_peers}")
        assert any(from_peers.values()), "no downloader fetched a chunk from another downloader"


# -- audits, leaving, withdrawing: one bed -------------------------------------------------

NODES = ("n1", "n2", "n3", "n4", "n5")


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetBed]:
    """A tracker on t auditing every second (a long grace: nothing repaired for silence),
    nodes on n1..n5. Each test uploads its own file; the leave test stops one node."""
    with netbed_or_skip(["t", *NODES], tmp_path_factory.mktemp("bed")) as b:
        b.start_tracker("t", "--repair-grace", "600", "--audit-interval", "1")
        b.start_nodes(*NODES)
        b.wait_online(len(NODES))
        yield b


def test_a_corrupt_copy_is_found_by_an_audit_and_repaired(bed: NetBed, tmp_path: Path) -> None:
    size = 8 * CHUNK + 5
    src = tmp_path / "audited.bin"
    digest = make_file(src, size)
    file_id = upload(bed, "n1", src, replicas=1)
    d = detail(bed, file_id)
    owner = bed.nodes["n1"].node_id
    name = names_by_id(bed)
    chunk = d["chunks"][1]
    victim = next(h["node_id"] for h in chunk["holders"] if h["node_id"] != owner)
    path = bed.nodes[name[victim]].chunk_path(chunk["chunk_id"])
    assert path.is_file()
    flip_a_byte(path)
    started = time.monotonic()

    def found_and_repaired() -> dict[str, Any] | None:
        x = detail(bed, file_id)
        listed = {h["node_id"] for h in x["chunks"][1]["holders"]}
        ok = victim not in listed and len(live_holders(x["chunks"][1], set())) >= 2
        return x if ok and x["last_audit"] is not None else None

    d = wait_for(
        "the audit to find the bad copy and the repair", found_and_repaired, AUDIT_DEADLINE
    )
    print(f"\nbad copy on {name[victim]} found and repaired in {time.monotonic() - started:.1f}s")
    assert at_target(d, set())
    for n in live_holders(d["chunks"][1], set()):
        assert bed.nodes[name[n]].chunk_path(chunk["chunk_id"]).is_file()
    # a node that holds the least of it (neither the owner nor the victim, which keeps its bad
    # copy) downloads it intact
    downloader = least_holding(bed, d, NODES, {"n1", name[victim]})
    out = tmp_path / "out" / "audited.bin"
    assert download(bed, downloader, file_id, out)["sha256"] == digest == sha256(out)


def test_deleting_a_file_reclaims_its_space_on_every_holder(bed: NetBed, tmp_path: Path) -> None:
    size = 2 * MiB + 999
    src = tmp_path / "withdrawn.bin"
    make_file(src, size)
    owner = next(h for h in NODES if alive(bed, h))
    file_id = upload(bed, owner, src, replicas=2)
    d = detail(bed, file_id)
    name = names_by_id(bed)
    sizes = chunk_sizes(size, CHUNK, len(d["chunks"]))
    held: dict[str, list[str]] = {}
    freed_expected: dict[str, int] = {}
    for ch in d["chunks"]:
        for h in ch["holders"]:
            host = name[h["node_id"]]
            held.setdefault(host, []).append(ch["chunk_id"])
            freed_expected[host] = freed_expected.get(host, 0) + sizes[ch["index"]]
    assert len(held) >= 3 and owner in held
    for host, cids in held.items():
        assert all(bed.nodes[host].chunk_path(c).is_file() for c in cids)
    used_before = {h: status(bed, h)["used_bytes"] for h in held}

    assert bed.cli_json(owner, "delete", file_id, "--yes")["file_id"] == file_id

    def left() -> list[tuple[str, str]]:
        return [
            (h, c) for h, cids in held.items() for c in cids if bed.nodes[h].chunk_path(c).exists()
        ]

    wait_for("every holder to delete the file's chunks", lambda: not left(), RECLAIM_DEADLINE)
    freed = {h: used_before[h] - status(bed, h)["used_bytes"] for h in held}
    assert freed == freed_expected


def test_a_holder_that_leaves_keeps_every_file_at_its_target(bed: NetBed, tmp_path: Path) -> None:
    size = 2 * MiB + 3
    src = tmp_path / "kept.bin"
    digest = make_file(src, size)
    owner = next(h for h in NODES if alive(bed, h))
    file_id = upload(bed, owner, src, replicas=1)
    d = detail(bed, file_id)
    name = names_by_id(bed)
    counts = held_counts(d)
    leaver = name[max((n for n in counts if name[n] != owner), key=counts.__getitem__)]
    leaver_id = bed.nodes[leaver].node_id

    started = time.monotonic()
    done = bed.cli_json(leaver, "leave", "--timeout", str(int(LEAVE_TIMEOUT)))
    assert done["node_id"] == leaver_id and done["chunks_held"] > 0
    assert bed.nodes[leaver].proc.popen.wait(timeout=EXIT_TIMEOUT) == 0  # stopped by itself
    print(f"\n{leaver} left ({counts[leaver_id]} chunks) in {time.monotonic() - started:.1f}s")
    d = detail(bed, file_id)
    for ch in d["chunks"]:
        others = live_holders(ch, {leaver_id})
        assert len(set(others)) >= d["replica_target"], ch
        for n in others:
            assert bed.nodes[name[n]].chunk_path(ch["chunk_id"]).is_file()
    downloader = least_holding(bed, d, NODES, {owner, leaver})
    out = tmp_path / "out" / "kept.bin"
    down = download(bed, downloader, file_id, out)
    assert down["sha256"] == digest == sha256(out)
    assert leaver_id not in {s["node_id"] for s in down["sources"]}
