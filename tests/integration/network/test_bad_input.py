"""Bad input to the CLI, against real processes: one line on stderr, a non-zero exit code, and
nothing changed anywhere (the tracker's catalogue and stats, each node's store and data dir)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.network.cluster import Cluster, Node, cluster, make_file, sha256

pytestmark = pytest.mark.timeout(300)

CHUNK = 64 * 1024
UNKNOWN_ID = "ab" * 32
"""Well-formed (64 lowercase hex characters) but no file has it."""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("bad"), nodes=4) as c:
        yield c


@pytest.fixture(scope="module")
def shared(net: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A file n1 shared, so the state the bad input must not touch is not empty."""
    src = tmp_path_factory.mktemp("shared") / "shared.bin"
    make_file(src, 3 * CHUNK + 5)
    return net.upload(net.nodes["n1"], src, "--chunk-size", "64KiB")


# -- what "nothing changed" means -------------------------------------------------------------


def _tree(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def snapshot(net: Cluster) -> dict[str, Any]:
    """The tracker's files and stats; each node's store, chunk files and transfers."""
    nodes = {}
    for node in net.nodes.values():
        st = net.status(node)
        nodes[node.name] = {
            "used_bytes": st["used_bytes"],
            "reserved_bytes": st["reserved_bytes"],
            "chunks": st["chunks"],
            "chunk_files": _tree(node.data_dir / "chunks"),
            "upload_records": _tree(node.data_dir / "uploads"),
            "transfers": httpx.get(f"{node.control_url}/v1/control/transfers", timeout=10).json(),
        }
    return {
        "files": net.get("/v1/files", include_deleted="true", limit=500),
        "stats": net.get("/v1/stats"),
        "nodes": nodes,
    }


def settle(net: Cluster, timeout: float = 20.0) -> None:
    """Wait until the tracker's view agrees with the nodes' (heartbeats carry free space)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = [net.status(n) for n in net.nodes.values()]
        stats = net.get("/v1/stats")
        if (
            stats["nodes_online"] == len(net.nodes)
            and stats["free_bytes"] == sum(s["free_bytes"] for s in statuses)
            and not any(s["reserved_bytes"] for s in statuses)
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the tracker never caught up: {stats} vs {statuses}")
        time.sleep(0.2)


@pytest.fixture
def before(net: Cluster, shared: dict[str, Any]) -> dict[str, Any]:
    settle(net)
    return snapshot(net)


def refused(
    proc: subprocess.CompletedProcess[str], *needles: str, code: int = 1, stdout: bool = False
) -> str:
    """Check ``proc`` failed with exit ``code`` and one error line containing ``needles``.

    Unless ``stdout``, nothing may be printed on stdout either (every case here uses --json).
    """
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"exit {proc.returncode}, stderr:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("p2pshare: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert proc.returncode == code, f"exit {proc.returncode}: {line}"
    if not stdout:
        assert proc.stdout == "", proc.stdout
    return line


def unchanged(net: Cluster, before: dict[str, Any]) -> None:
    assert snapshot(net) == before


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PSHARE_")}
    env["P2PSHARE_LOG_LEVEL"] = "INFO"
    return env


def plain_cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``p2pshare ARGS --node URL`` without --json, stdin and stdout not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "p2pshare", *args, "--node", node.control_url],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "fresh.bin"
    make_file(path, 2 * CHUNK + 3)
    return path


# -- download ---------------------------------------------------------------------------------


def test_download_of_an_unknown_file_id(
    net: Cluster, before: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out.bin"
    proc = net.cli(net.nodes["n2"], "download", UNKNOWN_ID, "-o", str(out))
    refused(proc, UNKNOWN_ID)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    unchanged(net, before)


@pytest.mark.parametrize("bad_id", ["1234", "Z" * 64, "AB" * 32, "ab" * 33])
def test_download_of_a_malformed_file_id(
    net: Cluster, before: dict[str, Any], tmp_path: Path, bad_id: str
) -> None:
    out = tmp_path / "out.bin"
    proc = net.cli(net.nodes["n2"], "download", bad_id, "-o", str(out))
    refused(proc, "file id must be 64 lowercase hex characters")
    assert list(tmp_path.iterdir()) == []
    unchanged(net, before)


def test_download_under_a_regular_file(
    net: Cluster, before: dict[str, Any], shared: dict[str, Any], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a directory")
    out = blocker / "out.bin"
    proc = net.cli(net.nodes["n2"], "download", shared["file_id"], "-o", str(out))
    refused(proc, str(blocker), "not a directory")
    assert blocker.read_bytes() == b"not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    unchanged(net, before)


def test_download_into_a_missing_directory(
    net: Cluster, before: dict[str, Any], shared: dict[str, Any], tmp_path: Path
) -> None:
    """A missing parent directory is refused (not created): a typo should not make dirs."""
    missing = tmp_path / "no" / "such"
    out = missing / "out.bin"
    proc = net.cli(net.nodes["n2"], "download", shared["file_id"], "-o", str(out))
    refused(proc, str(missing), "no such directory")
    assert list(tmp_path.iterdir()) == []
    unchanged(net, before)


def test_download_onto_a_directory(
    net: Cluster, before: dict[str, Any], shared: dict[str, Any], tmp_path: Path
) -> None:
    proc = net.cli(net.nodes["n2"], "download", shared["file_id"], "-o", str(tmp_path))
    refused(proc, str(tmp_path), "is a directory")
    assert list(tmp_path.iterdir()) == []
    unchanged(net, before)


# -- upload -----------------------------------------------------------------------------------


def test_upload_of_a_missing_file(net: Cluster, before: dict[str, Any], tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    proc = net.cli(net.nodes["n1"], "upload", str(missing), "--auto")
    refused(proc, "nope.bin", "no such file")
    unchanged(net, before)


def test_upload_of_a_directory(net: Cluster, before: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "inside.bin").write_bytes(b"x" * 100)
    proc = net.cli(net.nodes["n1"], "upload", str(tmp_path), "--auto")
    refused(proc, str(tmp_path), "is a directory")
    unchanged(net, before)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--alloc", "nobody=1MiB"], ["--alloc 'nobody=1MiB'", "no online node named 'nobody'"]),
        (["--alloc", "n2=lots"], ["--alloc 'n2=lots'", "not a size: 'lots'"]),
        (["--alloc", "n2"], ["--alloc 'n2'", "expected NAME=SIZE"]),
        (["--alloc", "=1MiB"], ["--alloc '=1MiB'", "expected NAME=SIZE"]),
        (["--alloc", "n2=1MiB", "--auto"], ["--alloc and --auto exclude each other"]),
        (["--auto", "--chunk-size", "3MiB"], ["--chunk-size 3MiB", "power of two"]),
        (["--auto", "--chunk-size", "huge"], ["--chunk-size huge", "not a size: 'huge'"]),
    ],
    ids=[
        "alloc-unknown-node",
        "alloc-bad-size",
        "alloc-no-size",
        "alloc-no-name",
        "alloc-and-auto",
        "chunk-size-not-power-of-two",
        "chunk-size-bad",
    ],
)
def test_upload_with_bad_options(
    net: Cluster, before: dict[str, Any], src: Path, extra: list[str], needles: list[str]
) -> None:
    proc = net.cli(net.nodes["n1"], "upload", str(src), *extra)
    refused(proc, *needles)
    unchanged(net, before)
    assert net.get("/v1/files", name=src.name)["items"] == []


def test_upload_with_zero_replicas_is_a_usage_error(
    net: Cluster, before: dict[str, Any], src: Path
) -> None:
    proc = net.cli(net.nodes["n1"], "upload", str(src), "--auto", "--replicas", "0")
    refused(proc, "--replicas", code=2)
    unchanged(net, before)


def test_upload_without_a_terminal_asks_for_auto_or_alloc(
    net: Cluster, before: dict[str, Any], src: Path
) -> None:
    proc = plain_cli(net.nodes["n1"], "upload", str(src))
    # the table of online nodes may go to stdout first; the error is the one stderr line
    refused(proc, "no terminal", "--auto", "--alloc NAME=SIZE", stdout=True)
    unchanged(net, before)
    # the same with --json, where nothing is ever asked
    proc = net.cli(net.nodes["n1"], "upload", str(src))
    refused(proc, "--auto", "--alloc NAME=SIZE")
    unchanged(net, before)


# -- no node, info ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["peers"],
        ["files"],
        ["info", UNKNOWN_ID],
        ["upload", "SRC", "--auto"],
        ["download", UNKNOWN_ID, "-o", "OUT"],
    ],
    ids=["peers", "files", "info", "upload", "download"],
)
def test_no_node_listening(
    net: Cluster, before: dict[str, Any], src: Path, tmp_path: Path, args: list[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    args = [
        str(src) if a == "SRC" else str(tmp_path / "out.bin") if a == "OUT" else a for a in args
    ]
    proc = net.cli(None, *args, "--node", url)
    refused(proc, url, "start one with 'p2pshare node'")
    assert not (tmp_path / "out.bin").exists()
    unchanged(net, before)


def test_info_of_a_malformed_id(net: Cluster, before: dict[str, Any]) -> None:
    proc = net.cli(net.nodes["n3"], "info", "1234")
    refused(proc, "file id must be 64 lowercase hex characters", "'1234'")
    unchanged(net, before)


def test_info_of_an_unknown_id(net: Cluster, before: dict[str, Any]) -> None:
    proc = net.cli(net.nodes["n3"], "info", UNKNOWN_ID)
    refused(proc, UNKNOWN_ID)
    unchanged(net, before)


# -- the node command -------------------------------------------------------------------------


def node_proc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pshare", "node", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=30,
        env=_env(),
        check=False,
    )


def test_a_second_node_on_a_data_dir_in_use_is_refused(
    net: Cluster, before: dict[str, Any], tmp_path: Path
) -> None:
    n1 = net.nodes["n1"]
    runtime = (n1.data_dir / "node.json").read_text()
    proc = node_proc(
        "--data",
        str(n1.data_dir),
        "--port",
        "0",
        "--control-port",
        "0",
        "--tracker",
        net.tracker_url,
    )
    line = refused(proc, str(n1.data_dir))
    assert "in use" in line or "another" in line or "running" in line, line
    unchanged(net, before)
    assert (n1.data_dir / "node.json").read_text() == runtime
    assert n1.proc.alive

    # the running node still serves: it answers, and a download through it works
    assert net.status(n1)["node_id"] == n1.node_id
    src = tmp_path / "after.bin"
    make_file(src, CHUNK + 1)
    up = net.upload(net.nodes["n2"], src, "--chunk-size", "64KiB")
    out = tmp_path / "got.bin"
    net.download(n1, up["file_id"], out)
    assert sha256(out) == sha256(src)


def test_node_with_a_storage_size_that_does_not_parse(
    net: Cluster, before: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    proc = node_proc(
        "--data",
        str(data),
        "--port",
        "0",
        "--control-port",
        "0",
        "--tracker",
        net.tracker_url,
        "--storage",
        "lots",
    )
    refused(proc, "storage", "lots")
    assert not data.exists()
    unchanged(net, before)


# -- --json on success ------------------------------------------------------------------------


def test_json_output_of_upload_and_download(net: Cluster, tmp_path: Path) -> None:
    n1, n3 = net.nodes["n1"], net.nodes["n3"]
    src = tmp_path / "doc.bin"
    digest = make_file(src, 4 * CHUNK + 9)
    proc = net.cli(n1, "upload", str(src), "--auto", "--chunk-size", "64KiB")
    assert proc.returncode == 0, proc.stderr
    up = json.loads(proc.stdout)
    assert {"file_id", "size", "chunks", "holders", "sha256", "seconds"} <= up.keys()
    assert (up["size"], up["chunks"], up["sha256"]) == (4 * CHUNK + 9, 5, digest)
    assert len(up["file_id"]) == 64
    assert (up["share_link"], up["encrypted"]) == (f"p2pshare://{up['file_id']}", False)
    holders = up["holders"]
    assert holders and all(
        {"node_id", "name", "address", "chunks", "bytes"} <= h.keys() for h in holders
    )
    assert n1.node_id not in {h["node_id"] for h in holders}
    assert sum(h["chunks"] for h in holders) == 5 * up["replicas"]
    assert sum(h["bytes"] for h in holders) == up["size"] * up["replicas"]

    out = tmp_path / "doc-copy.bin"
    proc = net.cli(n3, "download", up["file_id"], "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    down = json.loads(proc.stdout)
    assert set(down) == {
        "file_id",
        "name",
        "encrypted",
        "path",
        "sha256",
        "sha256_checked",
        "bytes",
        "seconds",
        "sources",
    }
    assert (down["name"], down["encrypted"], down["sha256_checked"]) == (src.name, False, False)
    assert (down["file_id"], down["path"], down["sha256"], down["bytes"]) == (
        up["file_id"],
        str(out),
        digest,
        up["size"],
    )
    assert isinstance(down["seconds"], float | int) and down["seconds"] >= 0
    assert sha256(out) == digest
    # what n3 did not hold itself came from the other holders
    held_by_n3 = sum(h["chunks"] for h in holders if h["node_id"] == n3.node_id)
    assert sum(s["chunks"] for s in down["sources"]) == 5 - held_by_n3
    assert n3.node_id not in {s["node_id"] for s in down["sources"]}


def test_the_control_api_itself_refuses_a_bad_chunk_size(
    net: Cluster, before: dict[str, Any], src: Path
) -> None:
    n1 = net.nodes["n1"]
    r = httpx.post(
        f"{n1.control_url}/v1/control/uploads",
        json={"path": str(src), "chunk_size": 3 * 2**20},
        timeout=10,
    )
    assert r.status_code == 400, r.text
    assert "power of two" in r.json()["detail"]
    unchanged(net, before)
