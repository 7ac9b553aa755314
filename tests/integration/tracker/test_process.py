"""The tracker as a real process: SIGKILL loses nothing acked, liveness in real time."""

from __future__ import annotations

import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from p2pshare.core.messages import FileDetail
from tests.integration.tracker.process import TrackerProcess
from tests.integration.tracker.support import body, manifest, nid, node, registration


@pytest.fixture
def tracker_process(tmp_path: Path) -> Iterator[TrackerProcess]:
    t = TrackerProcess(data_dir=tmp_path / "data", log_dir=tmp_path)
    try:
        yield t
    finally:
        t.stop()


def announce(client: httpx.Client, *node_ids: str) -> None:
    for n in node_ids:
        r = client.post("/v1/nodes/announce", json=body(node(n)))
        assert r.status_code == 200, r.text


def test_sigkill_then_restart_keeps_the_registered_file(tracker_process: TrackerProcess) -> None:
    t = tracker_process
    t.start()
    # TLS by default: the ready line's URL pins the certificate (checked by start())
    assert t.stdout().strip() == f"p2pshare tracker listening on {t.listening}"
    assert t.url == f"https://127.0.0.1:{t.port}"
    assert t.fingerprint is not None and len(t.fingerprint) == 64
    m = manifest(4)
    with t.client() as client:
        announce(client, nid("owner"), nid("h1"), nid("h2"))
        r = client.post(
            "/v1/files", json=body(registration(m, nid("owner"), [nid("h1"), nid("h2")]))
        )
        assert r.status_code == 201, r.text
        r = client.post(
            f"/v1/files/{m.file_id}/downloads",
            json={"node_id": nid("h2"), "role": "leecher", "bytes": 1},
        )
        assert r.status_code == 200
    checker = checker_pid(t)
    assert t.signal(signal.SIGKILL) == -signal.SIGKILL
    assert_ends(checker)  # its input closed with the tracker: no process is left behind
    pin = t.fingerprint

    t.start()
    assert t.fingerprint == pin  # the same key and certificate from the data dir
    with t.client() as client:
        r = client.get(f"/v1/files/{m.file_id}")
        assert r.status_code == 200, r.text
        d = FileDetail.model_validate_json(r.content)
        assert d.manifest == m
        assert d.downloads == 1
        assert [[h.node_id for h in c.holders] for c in d.chunks] == [[nid("h1"), nid("h2")]] * 4
        assert not any(h.online for c in d.chunks for h in c.holders)  # until they announce
        assert client.get("/v1/files").json()["total"] == 1
        assert {n["node_id"] for n in client.get("/v1/nodes").json()["items"]} == {
            nid("owner"),
            nid("h1"),
            nid("h2"),
        }
        announce(client, nid("h2"))
        d = FileDetail.model_validate_json(client.get(f"/v1/files/{m.file_id}").content)
        assert [(h.node_id, h.online) for h in d.chunks[0].holders] == [
            (nid("h2"), True),
            (nid("h1"), False),
        ]


def test_nodes_go_offline_after_three_intervals(tmp_path: Path) -> None:
    interval = 0.3
    t = TrackerProcess(tmp_path / "data", tmp_path, args=("--heartbeat-interval", str(interval)))
    try:
        t.start()
        m = manifest(2)
        with t.client() as client:
            ack = client.post("/v1/nodes/announce", json=body(node("owner"))).json()
            assert ack == {
                "heartbeat_interval": interval,
                "offline_after": pytest.approx(3 * interval),
                "repairs": [],
                "audits": [],
                "reclaim": [],
            }
            announce(client, nid("busy"))
            sent = time.monotonic()
            announce(client, nid("quiet"))
            acked = time.monotonic()
            r = client.post(
                "/v1/files", json=body(registration(m, nid("owner"), [nid("quiet"), nid("busy")]))
            )
            assert r.status_code == 201
            polls_online = 0
            while True:
                announce(client, nid("busy"))
                asked = time.monotonic()
                online = {n["node_id"] for n in client.get("/v1/nodes?online=true").json()["items"]}
                answered = time.monotonic()
                if nid("quiet") not in online:
                    break
                polls_online += 1
                assert asked - acked < 3 * interval + 2.0, "the silent node never went offline"
                time.sleep(interval / 4)
            assert answered - sent > 3 * interval  # not before 3 intervals of silence
            assert polls_online >= 2
            d = FileDetail.model_validate_json(client.get(f"/v1/files/{m.file_id}").content)
            for c in d.chunks:
                assert [(h.node_id, h.online) for h in c.holders] == [
                    (nid("busy"), True),
                    (nid("quiet"), False),
                ]
                assert c.replicas_online == 1
    finally:
        t.stop()


def test_sigterm_and_sigint_stop_cleanly_and_flush_announces(
    tracker_process: TrackerProcess,
) -> None:
    t = tracker_process
    t.start()
    with t.client() as client:
        announce(client, nid("a"))
        r = client.post("/v1/nodes/announce", json=body(node("a", free=42)))  # written behind
        assert r.status_code == 200
    checker = checker_pid(t)
    assert t.signal(signal.SIGTERM) in {0, -signal.SIGTERM}
    assert "Traceback" not in t.stderr()
    checked = re.search(r"signature checks: (\d+) by the process", t.stderr())
    assert checked is not None and int(checked[1]) == 2  # both announces, none inline
    assert_ends(checker)
    t.start()
    with t.client() as client:
        items = client.get("/v1/nodes").json()["items"]
        assert [(n["node_id"], n["free_bytes"]) for n in items] == [(nid("a"), 42)]
    assert t.signal(signal.SIGINT) == 130  # ctrl-C: the CLI's exit code for "interrupted"
    assert "Application shutdown complete" in t.stderr()
    assert "Traceback" not in t.stderr()


def checker_pid(t: TrackerProcess) -> int:
    """Return the pid of the tracker's signature checker, from its log."""
    found = re.search(r"signature checks in process (\d+)", t.stderr(whole=True))
    assert found is not None, t.stderr()
    return int(found[1])


def assert_ends(pid: int) -> None:
    """Assert that process ``pid`` (not our child) is gone within a few seconds."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # ended, not yet reaped
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pshare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_database_url_and_busy_port_are_one_line_errors(tmp_path: Path) -> None:
    proc = run_cli("tracker", "--data", str(tmp_path), "--db", "mysql://x/y", "--port", "0")
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("p2pshare: error: database driver 'mysql'"), proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("tracker", "--data", str(tmp_path), "--heartbeat-interval", "0", "--port", "0")
    assert proc.returncode == 1
    assert "heartbeat_interval" in proc.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("tracker", "--data", str(tmp_path), "--port", str(port))
    assert proc.returncode == 1, proc
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("p2pshare: error:")
    assert "in use" in proc.stderr


def test_an_idle_kept_alive_connection_stays_open_past_uvicorns_5_s(
    tracker_process: TrackerProcess,
) -> None:
    """A node keeps an idle connection 15 s for its next call; the tracker closed its side after
    uvicorn's 5 s, and a call sent as it closed failed with "Server disconnected" (a stopping
    node's offline report was lost so, and it stayed listed online). Now the tracker keeps it
    at least 20 s (``ServerLimits.idle_timeout``), whatever its header timeout."""
    t = tracker_process
    t.start()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # self-signed; start() pinned it
    with (
        socket.create_connection(("127.0.0.1", t.port), timeout=10) as raw,
        tls.wrap_socket(raw) as conn,
    ):
        for pause in (6.0, 0.0):
            conn.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _response_head(conn).startswith(b"HTTP/1.1 200"), "no answer"
            time.sleep(pause)


def _response_head(conn: ssl.SSLSocket) -> bytes:
    """Read one response (head and a Content-Length body) from ``conn``; return its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(4096)
        if not piece:
            return data  # closed by the tracker
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        piece = conn.recv(4096)
        assert piece, "the body was cut"
        rest += piece
    return head
