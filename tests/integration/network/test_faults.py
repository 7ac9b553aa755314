"""Faults between real processes: holders that die, lie or run out of room, and transfers that
are interrupted and resumed.

To act *during* a transfer without guessing with sleeps, a test freezes a holder with SIGSTOP:
the kernel still accepts connections and bytes for it, but nothing is answered, so requests to
it hang (for up to the 30 s read timeout) while the rest of the transfer goes on. The test then
waits for an observable sign of progress (a chunk file on a holder's disk, a line in a resume
record) and only then kills, cancels or thaws the frozen holder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.network.cluster import Cluster, Node, _clean_env, cluster, make_file, sha256

pytestmark = pytest.mark.timeout(300)

CHUNK = 64 * 1024
WAIT = 60.0
"""Bound of every event-driven wait below (generous: the machine is shared)."""


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh tracker and four nodes per test: these tests kill and freeze nodes."""
    with cluster(tmp_path / "net", nodes=4) as c:
        yield c


# -- helpers ----------------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll ``check`` every 5 ms until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def start_cli(node: Node, *args: str) -> subprocess.Popen[str]:
    """Start ``p2pshare --json ARGS --node URL`` in the background."""
    cmd = [sys.executable, "-m", "p2pshare", "--json", *args, "--node", node.control_url]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_clean_env(),
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120.0) -> tuple[int, str, str]:
    """Wait for a CLI started by :func:`start_cli`; return (exit code, stdout, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def chunk_files(node: Node) -> set[str]:
    """Return the ids of the whole chunk files in ``node``'s store (temp files excluded)."""
    root = node.data_dir / "chunks"
    found: set[str] = set()
    if not root.is_dir():
        return found
    for sub in os.scandir(root):
        if sub.is_dir():
            found.update(e.name for e in os.scandir(sub.path) if not e.name.startswith("."))
    return found


def lines(record: Path) -> list[dict[str, Any]]:
    """Return the entries of a resume record (JSON lines; a torn last line is ignored)."""
    if not record.exists():
        return []
    out = []
    for line in record.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def record_chunks(record: Path) -> list[str]:
    """Return the chunk ids listed in a download's resume record."""
    return [e["chunk"] for e in lines(record)]


def transfers(node: Node) -> list[dict[str, Any]]:
    r = httpx.get(f"{node.control_url}/v1/control/transfers", timeout=10)
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def holders_by_chunk(net: Cluster, file_id: str) -> dict[str, set[str]]:
    detail = net.get(f"/v1/files/{file_id}")
    return {ch["chunk_id"]: {h["node_id"] for h in ch["holders"]} for ch in detail["chunks"]}


def one_error_line(stderr: str) -> str:
    """Return the CLI's error line, checking it is the only line on stderr."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("p2pshare: error: "), stderr
    return lines[0]


def acked_by(uploader: Node, holder: Node) -> bool:
    """Whether ``uploader``'s resume records list an ack from ``holder``."""
    for record in (uploader.data_dir / "uploads").glob("*.jsonl"):
        if f'"{holder.node_id}"' in record.read_text(errors="replace"):
            return True
    return False


def freeze(node: Node) -> None:
    node.proc.popen.send_signal(signal.SIGSTOP)


def thaw(node: Node) -> None:
    node.proc.popen.send_signal(signal.SIGCONT)


def upload_to(net: Cluster, node: Node, src: Path, *extra: str) -> dict[str, Any]:
    """Upload ``src`` from ``node`` in 64 KiB chunks with ``extra`` flags (e.g. --alloc)."""
    return net.cli_json(node, "upload", str(src), "--chunk-size", "64KiB", *extra)  # type: ignore[no-any-return]


def upload_of(node: Node, path: Path, *extra: str) -> subprocess.Popen[str]:
    return start_cli(node, "upload", str(path), "--chunk-size", "64KiB", *extra)


# -- 1. a holder dies during an upload -----------------------------------------------------------


def test_holder_killed_during_upload_is_replaced(net: Cluster, tmp_path: Path) -> None:
    n1, n2, n3, n4 = (net.nodes[f"n{i}"] for i in range(1, 5))
    src = tmp_path / "big.bin"
    digest = make_file(src, 16 << 20)  # 256 chunks: n3 gets ~170 copies to receive

    up = upload_of(n1, src, "--auto", "--replicas", "2")
    # wait until n1 has recorded an ack from n3: n3 dies *after* acking some chunks, and
    # those must be placed again too (a dead holder is never registered)
    wait_for("n1 to record an ack from n3", lambda: acked_by(n1, n3))
    freeze(n3)  # from here on n3 answers nothing: its part of the upload cannot finish
    got = chunk_files(n3)
    net.kill("n3")

    code, out, err = finish(up)
    assert code == 0, err
    result = json.loads(out)
    assert result["sha256"] == digest
    held = holders_by_chunk(net, result["file_id"])
    assert len(held) == 256
    for holders in held.values():
        assert holders == {n1.node_id, n2.node_id, n4.node_id}
    # n3 did receive chunks of this file before it died; they were placed elsewhere
    assert got & set(held)
    assert sorted(h["name"] for h in result["holders"]) == ["n2", "n4"]
    for node in (n1, n2, n4):
        assert net.status(node)["reserved_bytes"] == 0, node.name


def test_holder_killed_during_upload_without_room_elsewhere_fails_cleanly(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path / "net", nodes=3) as net:
        net.start_node("n4", "256KiB")  # the only other holder, almost no room
        net.wait_online(4)
        n2, n3, n4 = net.nodes["n2"], net.nodes["n3"], net.nodes["n4"]
        src = tmp_path / "nowhere.bin"
        make_file(src, 8 << 20)

        up = upload_of(net.nodes["n1"], src, "--auto", "--replicas", "2")
        wait_for("n3 to receive a first chunk", lambda: chunk_files(n3))
        freeze(n3)
        net.kill("n3")

        code, out, err = finish(up)
        assert code == 1, (out, err)
        line = one_error_line(err)
        assert "cannot place the remaining chunks after losing" in line, line
        assert n3.node_id in line and ("room" in line or "space" in line), line
        assert net.get("/v1/files", name=src.name)["items"] == []
        for node in (net.nodes["n1"], n2, n4):
            assert net.status(node)["reserved_bytes"] == 0, node.name


# -- 2. a holder dies during a download ----------------------------------------------------------


def test_holder_killed_during_download(net: Cluster, tmp_path: Path) -> None:
    n1, n2, n3, n4 = (net.nodes[f"n{i}"] for i in range(1, 5))
    src = tmp_path / "dl.bin"
    digest = make_file(src, 16 << 20)  # 256 chunks
    up = upload_to(net, n1, src, "--alloc", "n2=32MiB", "--alloc", "n3=32MiB")
    for holders in holders_by_chunk(net, up["file_id"]).values():
        assert holders == {n1.node_id, n2.node_id, n3.node_id}

    out = tmp_path / "out" / "dl.bin"
    out.parent.mkdir()
    record = out.with_name("dl.bin.part.jsonl")
    freeze(n2)  # the downloader's first requests to n2 hang ...
    down = start_cli(n4, "download", up["file_id"], "-o", str(out))
    wait_for("chunks from the other holders", lambda: len(record_chunks(record)) >= 4)
    freeze(n1)  # ... and, with every holder frozen, the download holds still mid-way
    freeze(n3)
    assert len(record_chunks(record)) < 256
    assert not out.exists()
    net.kill("n2")  # its requests in flight fail, and go to n1 / n3 once they answer again
    thaw(n1)
    thaw(n3)

    code, stdout, err = finish(down)
    assert code == 0, err
    assert json.loads(stdout)["sha256"] == digest
    assert sha256(out) == digest
    assert f"from {n2.node_id} failed" in n4.proc.log()  # n2 really was asked, and lost
    for node in (n1, n3):  # each chunk served cleanly (no broken keep-alive connection)
        assert "AssertionError" not in node.proc.log(), node.name


# -- 3. a holder serves corrupt bytes ------------------------------------------------------------


def test_corrupt_chunks_are_fetched_elsewhere_and_reported(net: Cluster, tmp_path: Path) -> None:
    n1, n2, n3, n4 = (net.nodes[f"n{i}"] for i in range(1, 5))
    src = tmp_path / "rot.bin"
    digest = make_file(src, 12 * CHUNK)
    up = upload_to(net, n1, src, "--alloc", "n2=8MiB", "--alloc", "n3=8MiB")
    before = holders_by_chunk(net, up["file_id"])
    # every copy on n2's disk rots (same length, other bytes): n2 is a holder of every chunk,
    # and the scheduler spreads the first requests over all holders, so n2 is asked for some
    for cid in before:
        path = n2.chunk_path(cid)
        data = bytearray(path.read_bytes())
        data[100:200] = bytes(b ^ 0xFF for b in data[100:200])
        path.write_bytes(bytes(data))

    out = tmp_path / "rot-out.bin"
    down = net.download(n4, up["file_id"], out)
    assert down["sha256"] == digest
    assert sha256(out) == digest

    for node in (n1, n3):
        assert "AssertionError" not in node.proc.log(), node.name
    log = n4.proc.log()
    bad = {cid for cid in before if f"holder {n2.node_id} sent bad bytes for chunk {cid}" in log}
    assert bad, log
    after = holders_by_chunk(net, up["file_id"])
    for cid in bad:
        assert n2.node_id not in after[cid], cid
        assert {n1.node_id, n3.node_id} <= after[cid]
    # a chunk n2 was not asked for keeps n2: nothing was reported about it
    for cid in set(before) - bad:
        assert n2.node_id in after[cid], cid


# -- 4. an interrupted download resumes ----------------------------------------------------------


def test_interrupted_download_resumes_without_refetching(net: Cluster, tmp_path: Path) -> None:
    n1, n2, n4 = net.nodes["n1"], net.nodes["n2"], net.nodes["n4"]
    src = tmp_path / "resume.bin"
    digest = make_file(src, 64 * CHUNK)
    up = upload_to(net, n1, src, "--replicas", "1", "--alloc", "n2=8MiB")
    manifest = net.get(f"/v1/files/{up['file_id']}")["manifest"]
    chunks = set(manifest["chunk_ids"])
    assert len(chunks) == 64

    # the last chunk is left only on n2, which is frozen: the download cannot finish
    last = manifest["chunk_ids"][-1]
    n1.chunk_path(last).unlink()
    out = tmp_path / "resume-out.bin"
    part, record = out.with_name("resume-out.bin.part"), out.with_name("resume-out.bin.part.jsonl")
    freeze(n2)
    down = start_cli(n4, "download", up["file_id"], "-o", str(out))
    wait_for("some chunks written", lambda: len(record_chunks(record)) >= 8)
    down.send_signal(signal.SIGINT)  # ctrl-C: the CLI cancels the transfer on the node
    code, _, err = finish(down)
    assert code == 130, err
    assert "run the same command again to resume" in err
    wait_for(
        "the download to stop",
        lambda: all(t["state"] == "cancelled" for t in transfers(n4) if t["kind"] == "download"),
    )
    thaw(n2)

    assert part.is_file() and part.stat().st_size == 64 * CHUNK
    assert record.is_file()
    written = set(record_chunks(record))
    assert len(written) >= 8 and last not in written
    assert not out.exists()

    # take the chunks already written away from every holder: the re-run can only succeed if
    # it does not fetch them again; and restart n4, which then has no reference to them
    for cid in written:
        for node in (n1, n2):
            node.chunk_path(cid).unlink()
    net.kill("n4", signal.SIGTERM)
    n4 = net.start_node("n4", n4.storage)
    net.wait_online(4)
    again = net.download(n4, up["file_id"], out)
    assert again["sha256"] == digest
    assert sha256(out) == digest
    assert not part.exists() and not record.exists()

    # n4 serves those chunks too, from the downloaded file: n3 can only get them from it
    third = net.download(net.nodes["n3"], up["file_id"], tmp_path / "third.bin")
    assert third["sha256"] == digest
    assert not any(n4.chunk_path(cid).exists() for cid in written)  # no copies: references


# -- 5. not enough room anywhere -----------------------------------------------------------------


def test_upload_bigger_than_the_free_space_is_refused_up_front(tmp_path: Path) -> None:
    with cluster(tmp_path / "net", nodes=4, storage="1MiB") as net:
        n1 = net.nodes["n1"]
        src = tmp_path / "toobig.bin"
        make_file(src, 2 << 20)  # 2 replicas of 2 MiB on three holders of 1 MiB each

        refused = net.cli(n1, "upload", str(src), "--auto", "--chunk-size", "64KiB")
        assert refused.returncode == 1, refused.stdout
        line = one_error_line(refused.stderr)
        assert "2 replicas need 4.0 MiB" in line and "offer 3.0 MiB" in line, line
        assert net.get("/v1/files", name=src.name)["items"] == []
        for node in net.nodes.values():
            assert chunk_files(node) == set(), node.name
            st = net.status(node)
            assert (st["reserved_bytes"], st["used_bytes"]) == (0, 0), node.name


# -- an interrupted upload resumes ---------------------------------------------------------------


def test_interrupted_upload_resumes_without_resending_acked_chunks(
    net: Cluster, tmp_path: Path
) -> None:
    n1, n2, n3 = net.nodes["n1"], net.nodes["n2"], net.nodes["n3"]
    src = tmp_path / "up-resume.bin"
    digest = make_file(src, 32 * CHUNK)
    alloc = ("--alloc", "n2=8MiB", "--alloc", "n3=8MiB")

    up = upload_of(n1, src, *alloc, "--replicas", "1")
    wait_for("n3 to receive a first chunk", lambda: chunk_files(n3))
    freeze(n3)
    records = n1.data_dir / "uploads"
    wait_for(
        "acks from n2 in the resume record",
        lambda: any(a["holder"] == n2.node_id for f in records.glob("*.jsonl") for a in lines(f)),
    )
    up.send_signal(signal.SIGINT)
    code, _, err = finish(up)
    assert code == 130, err
    thaw(n3)  # the cancelled upload still releases its reservation on n3, then stops
    wait_for(
        "the upload to stop",
        lambda: all(t["state"] == "cancelled" for t in transfers(n1) if t["kind"] == "upload"),
    )

    (record,) = records.glob("*.jsonl")
    acked = lines(record)
    assert acked
    by_id = {n.node_id: n for n in net.nodes.values()}
    for a in acked:  # a re-sent chunk would be stored again: take the acked ones away
        by_id[a["holder"]].chunk_path(a["chunk"]).unlink()

    net.wait_online(4)
    result = net.cli_json(
        n1, "upload", str(src), *alloc, "--replicas", "1", "--chunk-size", "64KiB"
    )
    assert result["sha256"] == digest
    assert not record.exists()
    held = holders_by_chunk(net, result["file_id"])
    for a in acked:
        assert a["holder"] in held[a["chunk"]]  # counted as placed ...
        assert not by_id[a["holder"]].chunk_path(a["chunk"]).exists()  # ... and not re-sent


def test_a_stopped_node_is_offline_at_once_not_after_three_heartbeats(tmp_path: Path) -> None:
    """A node stopped by SIGTERM (or ctrl-C) tells the tracker, so no downloader is sent to
    it for the 90 s (three default heartbeats) its silence would take to notice."""
    c = Cluster(tmp_path)
    try:
        c.start_tracker(heartbeat=None)  # the default: 30 s between announces
        a = c.start_node("a", "64MiB")
        c.start_node("b", "64MiB")
        c.wait_online(2)
        c.kill("a", signal.SIGTERM)  # returns once the node has exited
        c.wait_offline(a, timeout=5.0)  # its silence alone would take 90 s
        assert "told the tracker this node stops" in a.proc.log()
        assert {n["node_id"] for n in c.get("/v1/nodes", online="true")["items"]} == {
            c.nodes["b"].node_id
        }
        c.start_node("a", "64MiB")  # back: its first announce brings it online again
        c.wait_online(2, timeout=10.0)
    finally:
        c.close()
