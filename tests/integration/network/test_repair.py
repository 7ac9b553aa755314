"""Repair between real processes on loopback: killed holders are replaced by copies."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.network.cluster import Cluster, Node, make_file, sha256

pytestmark = pytest.mark.timeout(300)

GRACE = 2
REPAIR_DEADLINE = 45.0
"""Seconds after a kill by which every chunk must be back at its target: 3 heartbeats to be
offline + the grace + a repair round + one announce of the source + the copy, with room."""


def chunks_at_target(c: Cluster, file_id: str, dead: set[str]) -> tuple[bool, Any]:
    d = c.get(f"/v1/files/{file_id}")
    ok = all(
        sum(1 for h in ch["holders"] if h["online"] and h["node_id"] not in dead)
        >= d["replica_target"]
        for ch in d["chunks"]
    )
    return ok, d


def wait_repaired(c: Cluster, file_id: str, dead: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + REPAIR_DEADLINE
    while True:
        ok, d = chunks_at_target(c, file_id, dead)
        if ok:
            return d  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"not repaired within {REPAIR_DEADLINE}s: {d['chunks']}")
        time.sleep(0.5)


def test_killed_holders_are_replaced_and_the_file_still_downloads(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_tracker("--repair-grace", str(GRACE))
        for i in range(1, 6):
            c.start_node(f"n{i}", "64MiB")
        c.wait_online(5)
        src = tmp_path / "precious.bin"
        digest = make_file(src, 12 * 64 * 1024 + 99)
        up = c.upload(c.nodes["n1"], src, "--replicas", "1", "--chunk-size", "64KiB")
        file_id = up["file_id"]
        ok, d = chunks_at_target(c, file_id, set())
        assert ok and d["replica_target"] == 2

        # kill the holder of the most chunks (not the owner)
        by_id = {n.node_id: n for n in c.nodes.values()}
        counts: dict[str, int] = {}
        for ch in d["chunks"]:
            for h in ch["holders"]:
                counts[h["node_id"]] = counts.get(h["node_id"], 0) + 1
        victim = max((n for n in counts if n != c.nodes["n1"].node_id), key=counts.__getitem__)
        dead = {victim}
        c.kill(by_id[victim].name)
        started = time.monotonic()
        d = wait_repaired(c, file_id, dead)
        took = time.monotonic() - started
        for ch in d["chunks"]:
            live = [h["node_id"] for h in ch["holders"] if h["online"]]
            assert len(live) == len(set(live))
        # the new copies are real files on the new holders' disks
        for ch in d["chunks"]:
            for h in ch["holders"]:
                if h["node_id"] not in dead:
                    assert by_id[h["node_id"]].chunk_path(ch["chunk_id"]).is_file()

        # a second holder (the owner itself) dies after the repair: repaired again
        c.kill("n1")
        dead.add(c.nodes["n1"].node_id)
        wait_repaired(c, file_id, dead)

        # a node that joins now downloads the file intact
        fresh = c.start_node("n6", "64MiB")
        out = tmp_path / "copy.bin"
        down = c.download(fresh, file_id, out)
        assert down["sha256"] == digest == sha256(out)
        assert took < REPAIR_DEADLINE
    finally:
        c.close()


def wait_replaced(c: Cluster, file_id: str, index: int, bad: str) -> dict[str, Any]:
    """Wait until chunk ``index`` is no longer listed on ``bad`` and is back at its target."""
    deadline = time.monotonic() + REPAIR_DEADLINE
    while True:
        d = c.get(f"/v1/files/{file_id}")
        holders = {h["node_id"] for h in d["chunks"][index]["holders"] if h["online"]}
        if bad not in holders and len(holders) >= d["replica_target"]:
            return d  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"not replaced: {d['chunks'][index]}"
        time.sleep(0.5)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_copy_is_found_by_an_audit_and_repaired(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_tracker("--repair-grace", str(GRACE), "--audit-interval", "1")
        for i in range(1, 6):
            c.start_node(f"n{i}", "64MiB")
        c.wait_online(5)
        src = tmp_path / "audited.bin"
        digest = make_file(src, 3 * 64 * 1024 + 5)
        n1 = c.nodes["n1"]
        up = c.upload(n1, src, "--replicas", "2", "--chunk-size", "64KiB")
        file_id = up["file_id"]
        d = c.get(f"/v1/files/{file_id}")
        chunk = d["chunks"][1]
        by_id = {n.node_id: n for n in c.nodes.values()}
        victim = next(by_id[h["node_id"]] for h in chunk["holders"] if h["node_id"] != n1.node_id)
        flip_a_byte(victim.chunk_path(chunk["chunk_id"]))

        # an audit finds it: the copy is no longer listed, and the chunk is repaired elsewhere
        d = wait_replaced(c, file_id, 1, victim.node_id)
        assert d["last_audit"] is not None
        info = c.cli_json(n1, "info", file_id)
        assert info["last_audit"] is not None and info["under_target"] == 0
        listed = {h["node_id"] for ch in d["chunks"] for h in ch["holders"] if h["online"]}
        assert info["holders_online"] == d["holders_online"] == len(listed)  # all listed here

        fresh = c.start_node("n6", "64MiB")
        out = tmp_path / "copy.bin"
        assert c.download(fresh, file_id, out)["sha256"] == digest == sha256(out)
    finally:
        c.close()


def test_a_node_that_leaves_gracefully_keeps_every_file_at_its_target(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_tracker("--repair-grace", "600")  # no repair by silence: only the leave
        for i in range(1, 6):
            c.start_node(f"n{i}", "64MiB")
        c.wait_online(5)
        src = tmp_path / "kept.bin"
        digest = make_file(src, 6 * 64 * 1024 + 1)
        n1 = c.nodes["n1"]
        up = c.upload(n1, src, "--replicas", "2", "--chunk-size", "64KiB")
        d = c.get(f"/v1/files/{up['file_id']}")
        by_id = {n.node_id: n for n in c.nodes.values()}
        leaver = max(
            (by_id[h["node_id"]] for ch in d["chunks"] for h in ch["holders"]),
            key=lambda n: (
                sum(1 for ch in d["chunks"] for h in ch["holders"] if h["node_id"] == n.node_id)
                if n is not n1
                else -1
            ),
        )
        assert leaver is not n1
        done = c.cli_json(leaver, "leave", "--timeout", "60")
        assert done["node_id"] == leaver.node_id and done["chunks_held"] > 0
        assert leaver.proc.popen.wait(timeout=30) == 0  # it stopped by itself, cleanly
        d = c.get(f"/v1/files/{up['file_id']}")
        for ch in d["chunks"]:
            others = [h for h in ch["holders"] if h["node_id"] != leaver.node_id]
            assert len(others) >= d["replica_target"], ch
            for h in others:
                assert by_id[h["node_id"]].chunk_path(ch["chunk_id"]).is_file()
        fresh = c.start_node("n6", "64MiB")
        out = tmp_path / "copy.bin"
        assert c.download(fresh, up["file_id"], out)["sha256"] == digest == sha256(out)
    finally:
        c.close()


NO_AUDITS = ("--repair-grace", "600", "--audit-interval", "3600")


@dataclass
class Scanned:
    """A file uploaded from n1 onto the scanner n2 only (which re-hashes its chunks every
    second), n3 idle; ``chunk`` is the first chunk's id."""

    port: int
    scanner: Node
    up: dict[str, Any]
    digest: str
    chunk: str


def scanned_upload(c: Cluster, src: Path) -> Scanned:
    url = c.start_tracker(*NO_AUDITS)
    n1 = c.start_node("n1", "64MiB")
    scanner = c.start_node("n2", "64MiB", "--scan-interval", "1")
    c.start_node("n3", "64MiB")
    c.wait_online(3)
    digest = make_file(src, 2 * 64 * 1024 + 3)
    args = ["--replicas", "1", "--alloc", "n2=64MiB", "--chunk-size", "64KiB"]
    up = c.cli_json(n1, "upload", str(src), *args)
    chunk = c.get(f"/v1/files/{up['file_id']}")["chunks"][0]["chunk_id"]
    port = int(url.partition("#")[0].rsplit(":", 1)[1])
    return Scanned(port, scanner, up, digest, chunk)


def assert_repaired_and_downloads(c: Cluster, s: Scanned, out: Path) -> None:
    wait_replaced(c, s.up["file_id"], 0, s.scanner.node_id)
    assert c.download(c.nodes["n3"], s.up["file_id"], out)["sha256"] == s.digest


def test_a_node_s_own_integrity_scan_reports_a_corrupt_chunk_which_is_repaired(
    tmp_path: Path,
) -> None:
    c = Cluster(tmp_path)
    try:
        s = scanned_upload(c, tmp_path / "scanned.bin")
        flip_a_byte(s.scanner.chunk_path(s.chunk))

        assert_repaired_and_downloads(c, s, tmp_path / "copy.bin")
        assert not s.scanner.chunk_path(s.chunk).exists()
        assert list((s.scanner.data_dir / "quarantine").glob(f"{s.chunk}*"))
    finally:
        c.close()


def test_a_chunk_lost_while_the_tracker_is_down_is_reported_once_it_is_back(
    tmp_path: Path,
) -> None:
    """The scanner quarantines a chunk while the tracker is down, for longer than a report's
    first attempts take (0.5 + 1 + 2 + 4 + 8 s): the report waits, and is taken, and the
    chunk repaired, once the tracker is back."""
    c = Cluster(tmp_path)
    try:
        s = scanned_upload(c, tmp_path / "unlucky.bin")
        c.kill("tracker")
        flip_a_byte(s.scanner.chunk_path(s.chunk))
        deadline = time.monotonic() + 20
        while s.scanner.chunk_path(s.chunk).exists():
            assert time.monotonic() < deadline, "the scan did not quarantine the chunk"
            time.sleep(0.2)
        time.sleep(17)  # past the attempts a report was given before
        c.start_tracker(*NO_AUDITS, port=s.port)

        assert_repaired_and_downloads(c, s, tmp_path / "copy.bin")
        assert "trying again" in (tmp_path / "n2.log").read_text()
    finally:
        c.close()


def test_a_lost_chunk_a_crashed_node_had_not_reported_is_reported_when_it_starts_again(
    tmp_path: Path,
) -> None:
    """The scanner quarantines a chunk while the tracker is down and is killed before it could
    report it. Its next start reports it (its scan finds nothing more: the chunk is out of
    its store), and the chunk is repaired."""
    c = Cluster(tmp_path)
    try:
        s = scanned_upload(c, tmp_path / "crashed.bin")
        c.kill("tracker")
        flip_a_byte(s.scanner.chunk_path(s.chunk))
        log = tmp_path / "n2.log"
        deadline = time.monotonic() + 20
        while "reporting 1 lost chunks failed" not in log.read_text():
            assert time.monotonic() < deadline, "the scan did not quarantine the chunk"
            time.sleep(0.2)
        c.kill("n2")  # SIGKILL: nothing said or done at stop
        c.start_tracker(*NO_AUDITS, port=s.port)
        c.start_node("n2", "64MiB", "--scan-interval", "3600")

        assert_repaired_and_downloads(c, s, tmp_path / "copy.bin")
        assert "1 lost chunks from before this start to report" in log.read_text()
    finally:
        c.close()


def test_a_leave_survives_a_tracker_restart(tmp_path: Path) -> None:
    """The tracker keeps who is leaving in memory; the leaving node asks again after a
    restart, and still leaves only once every chunk is held elsewhere."""
    c = Cluster(tmp_path)
    try:
        url = c.start_tracker("--repair-grace", "600")
        port = int(url.partition("#")[0].rsplit(":", 1)[1])
        n1 = c.start_node("n1", "64MiB")
        # the leaver sends slowly, so its leaving spans the tracker's restart
        leaver = c.start_node("n2", "64MiB", "--max-upload-rate", "256KiB")
        c.start_node("n3", "64MiB")
        c.wait_online(3)
        src = tmp_path / "slow.bin"
        digest = make_file(src, 2 * 2**20)
        args = ["--replicas", "1", "--alloc", "n2=64MiB", "--chunk-size", "256KiB"]
        up = c.cli_json(n1, "upload", str(src), *args)
        r = httpx.post(f"{leaver.control_url}/v1/control/leave", timeout=10)
        assert r.status_code == 202 and r.json()["chunks_waiting"] > 0
        c.kill("tracker")
        c.start_tracker("--repair-grace", "600", port=port)
        assert leaver.proc.popen.wait(timeout=90) == 0  # left by itself, cleanly
        d = c.get(f"/v1/files/{up['file_id']}")
        for ch in d["chunks"]:
            others = {h["node_id"] for h in ch["holders"] if h["node_id"] != leaver.node_id}
            assert len(others) >= d["replica_target"], ch
        out = tmp_path / "copy.bin"
        assert c.download(c.nodes["n3"], up["file_id"], out)["sha256"] == digest
    finally:
        c.close()
