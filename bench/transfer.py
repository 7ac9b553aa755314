"""Upload and download speed among local nodes: plain, TLS, and TLS + encryption (a figure).

usage: python bench/transfer.py [--size 32MiB] [--chunk-size 8MiB] [--replicas 2] [--rounds 3]

Starts two clusters of the test harness of ``tests/integration/network`` (a real tracker and
four real node processes each, on loopback): one with ``--no-tls`` everywhere (plain http), one
with the default TLS (certificates pinned by the fingerprint in the tracker's URL). Three
configurations move files of the same size, of fresh random bytes each time:

  a  plain            the plain cluster, ``upload --no-encrypt``
  b  TLS              the TLS cluster, ``upload --no-encrypt``
  c  TLS + encryption the TLS cluster, ``upload --encrypt``, download by the share link

In each, n1 uploads with ``--replicas`` holders per chunk among n2/n3 (``--alloc``), then n4,
which holds none of it, downloads it (so it fetches every chunk) and the copy is checked
against the original's SHA-256. Both are driven by the real CLI. One warm-up round of a, b, c
is not counted; then ``--rounds`` rounds of a, b, c, interleaved. Prints the median MB/s of
each configuration, from the CLI's wall time (what a user waits, the CLI's own start of a
second or more included, which flattens the ratios of small files) and from the seconds the
node reports (the transfer alone), the ratios b/a and c/a, and the peak RSS (VmHWM) of every
process. The trackers' audits are put off (they re-read chunks); both clusters stay up
throughout and share this machine's cores with whatever else runs (the load average is
printed before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from p2pshare.core.chunking import DEFAULT_CHUNK_SIZE
from p2pshare.core.errors import InvalidSize
from p2pshare.core.sizes import format_size, parse_size

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the test harness
from tests.integration.network.cluster import Cluster, Node, _clean_env, make_file, sha256

NODES = ("n1", "n2", "n3", "n4")
"""n1 uploads, n2 and n3 hold, n4 downloads."""
HOLDERS = ("n2", "n3")


@dataclass(frozen=True)
class Config:
    """One way of moving a file: over which cluster, encrypted or not."""

    key: str
    label: str
    tls: bool
    encrypt: bool


CONFIGS = (
    Config("a", "plain", tls=False, encrypt=False),
    Config("b", "TLS", tls=True, encrypt=False),
    Config("c", "TLS + encryption", tls=True, encrypt=True),
)


@dataclass
class Runs:
    """The measured transfers of one configuration (MB/s; warm-up excluded)."""

    up_wall: list[float] = field(default_factory=list)
    up_node: list[float] = field(default_factory=list)
    down_wall: list[float] = field(default_factory=list)
    down_node: list[float] = field(default_factory=list)
    cli_rss: int = 0

    def series(self) -> dict[str, list[float]]:
        return {
            "up_wall": self.up_wall,
            "up_node": self.up_node,
            "down_wall": self.down_wall,
            "down_node": self.down_node,
        }


def peak_rss(pid: int) -> int:
    """Return the peak resident set size of a live process, in bytes (Linux VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_cli(node: Node, *args: str) -> tuple[dict[str, object], float, int]:
    """Run ``p2pshare --json ARGS --node URL``; return its JSON, wall seconds and peak RSS."""
    cmd = [sys.executable, "-m", "p2pshare", "--json", *args, "--node", node.control_url]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=_clean_env())
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{args[0]} failed: {err.read().decode(errors='replace')}")
    return json.loads(out), seconds, usage.ru_maxrss * 1024


def start(root: Path, storage: str, *, tls: bool) -> Cluster:
    """Return a tracker and nodes n1..n4 of the test harness, all announced; plain http
    (``--no-tls``) or the default TLS. The tracker's audits are put off for the run."""
    root.mkdir(parents=True)
    c = Cluster(root)
    extra = () if tls else ("--no-tls",)
    try:
        c.start_tracker("--audit-interval", "86400", *extra)
        for name in NODES:
            c.start_node(name, storage, *extra)
        c.wait_online(len(NODES))
        check_addresses(c, tls=tls)
    except BaseException:
        c.close()
        raise
    return c


def check_addresses(c: Cluster, *, tls: bool) -> None:
    """Refuse a cluster that does not serve what it is meant to measure."""
    scheme = "https://" if tls else "http://"
    addresses = [c.tracker_url] + [n.address for n in c.nodes.values()]
    if not all(a.startswith(scheme) for a in addresses):
        raise SystemExit(f"expected {scheme} addresses, got {addresses}")
    if tls and not all("#" in a for a in addresses):
        raise SystemExit(f"TLS addresses without a certificate pin: {addresses}")


@contextmanager
def clusters(root: Path, storage: str) -> Iterator[dict[bool, Cluster]]:
    """Yield the plain and the TLS cluster (keyed by ``tls``), started side by side. Every
    one that starts is closed at the end, whatever happened (on ctrl-C, once it is up)."""
    pool = ThreadPoolExecutor(2)
    futures = {
        tls: pool.submit(start, root / name, storage, tls=tls)
        for tls, name in ((False, "plain"), (True, "tls"))
    }
    pool.shutdown(wait=False)
    try:
        yield {tls: fut.result() for tls, fut in futures.items()}
    finally:
        for fut in futures.values():
            fut.add_done_callback(_close)


def _close(fut: Future[Cluster]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


def transfer(
    c: Cluster, cfg: Config, src: Path, digest: str, args: argparse.Namespace
) -> tuple[dict[str, object], float, int, dict[str, object], float]:
    """Upload ``src`` from n1 onto n2/n3, then download it on n4 and check the copy.

    Returns the upload's JSON, wall seconds and CLI peak RSS, and the download's JSON and
    wall seconds."""
    budget = format_size(2 * src.stat().st_size + (1 << 20)).replace(" ", "")
    up, up_s, up_rss = run_cli(
        c.nodes["n1"],
        "upload",
        str(src),
        *(arg for h in HOLDERS for arg in ("--alloc", f"{h}={budget}")),
        "--replicas",
        str(args.replicas),
        "--chunk-size",
        args.chunk_size,
        "--encrypt" if cfg.encrypt else "--no-encrypt",
    )
    if bool(up.get("encrypted")) != cfg.encrypt:
        raise SystemExit(f"{cfg.label}: the upload says encrypted={up.get('encrypted')}")
    what = str(up["share_link"]) if cfg.encrypt else str(up["file_id"])
    if cfg.encrypt and "#" not in what:
        raise SystemExit(f"{cfg.label}: the share link has no key: {what}")
    out = src.with_suffix(".copy")
    down, down_s, _ = run_cli(c.nodes["n4"], "download", what, "-o", str(out))
    if down["sha256"] != digest or sha256(out) != digest:
        raise SystemExit(f"{cfg.label}: the downloaded file differs from the original")
    out.unlink()
    return up, up_s, up_rss, down, down_s


def load() -> str:
    """This machine's load average over the last minute, and its cores."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def report(runs: dict[str, Runs], by_tls: dict[bool, Cluster], rounds: int) -> None:
    """Print the medians, the ratios to plain and the peak RSS of every process."""
    print()
    print(
        f"median MB/s of {rounds} round{'s' if rounds > 1 else ''} (MB = 10^6 bytes of the file; "
        "wall: the CLI's run, node: the seconds the node reports)"
    )
    print(f"{'':<22}{'upload':>19}{'':>19}{'download':>19}")
    print(f"{'configuration':<22}" + "".join(f"{h:>19}" for h in ("wall", "node") * 2))
    for cfg in CONFIGS:
        meds = [statistics.median(s) for s in runs[cfg.key].series().values()]
        print(f"{cfg.key} {cfg.label:<20}" + "".join(f"{m:>19.1f}" for m in meds))
    print("ratio to plain: of the medians (the range of the per-round ratios)")
    plain = runs["a"]
    for cfg in CONFIGS[1:]:
        cells = []
        for mine, base in zip(
            runs[cfg.key].series().values(), plain.series().values(), strict=True
        ):
            per_round = [x / y for x, y in zip(mine, base, strict=True)]
            cells.append(
                f"x{statistics.median(mine) / statistics.median(base):.2f}"
                f" ({min(per_round):.2f}-{max(per_round):.2f})"
            )
        print(f"{cfg.key}/a {cfg.label:<18}" + "".join(f"{cell:>19}" for cell in cells))
    for cfg in CONFIGS[1:]:
        up_w, up_n, down_w, down_n = (
            statistics.median(mine) / statistics.median(base)
            for mine, base in zip(
                runs[cfg.key].series().values(), plain.series().values(), strict=True
            )
        )
        print(
            f"{cfg.label} runs at x{up_n:.2f} of plain upload speed and x{down_n:.2f} of plain "
            f"download speed in the node (x{up_w:.2f} and x{down_w:.2f} of the CLI's wall time)"
        )

    print("peak RSS (VmHWM)       plain        TLS")
    procs: dict[str, list[int]] = {"tracker": []}
    for c in (by_tls[False], by_tls[True]):
        assert c.tracker is not None
        procs["tracker"].append(peak_rss(c.tracker.popen.pid))
        for name, node in sorted(c.nodes.items()):
            procs.setdefault(f"node {name}", []).append(peak_rss(node.proc.popen.pid))
    for label, (plain_rss, tls_rss) in procs.items():
        print(f"  {label:<17} {format_size(plain_rss):>10} {format_size(tls_rss):>10}")
    cli = "  ".join(f"{cfg.key} {format_size(runs[cfg.key].cli_rss)}" for cfg in CONFIGS)
    print(f"  cli upload        {cli}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="32MiB", help="file size (default 32MiB)")
    p.add_argument(
        "--chunk-size",
        default=str(DEFAULT_CHUNK_SIZE),
        help=f"chunk size (default {format_size(DEFAULT_CHUNK_SIZE)}, the project's)",
    )
    p.add_argument(
        "--replicas", type=int, default=2, help="holders per chunk besides n1: 1 or 2 (default 2)"
    )
    p.add_argument("--rounds", type=int, default=3, help="measured rounds of a, b, c (default 3)")
    args = p.parse_args()
    try:
        size = parse_size(args.size)
        parse_size(args.chunk_size)
    except InvalidSize as exc:
        raise SystemExit(f"--size/--chunk-size: {exc.detail}") from None
    if not 1 <= args.replicas <= len(HOLDERS):
        raise SystemExit(f"--replicas: 1 to {len(HOLDERS)} (the holders are n2 and n3)")
    if not 1 <= args.rounds <= 100:
        raise SystemExit("--rounds: 1 to 100")
    mb = size / 1e6
    # every node may end up holding every file of its cluster (encrypted ones a little larger)
    storage = format_size(3 * (args.rounds + 1) * size + (256 << 20)).replace(" ", "")
    runs = {cfg.key: Runs() for cfg in CONFIGS}
    print(
        f"file {format_size(size)}, chunks {args.chunk_size}, {args.replicas} replicas besides "
        f"the uploader; per cluster a tracker and 4 nodes on loopback; 1 warm-up round, then "
        f"{args.rounds} round{'s' if args.rounds > 1 else ''} of a, b, c",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="p2pshare-bench-") as tmp,
        clusters(Path(tmp), storage) as by_tls,
    ):
        root = Path(tmp)
        print(f"both clusters up; {load()}", flush=True)
        for rnd in range(args.rounds + 1):
            for cfg in CONFIGS:
                src = root / f"{cfg.key}{rnd}.bin"
                digest = make_file(src, size)
                up, up_s, up_rss, down, down_s = transfer(by_tls[cfg.tls], cfg, src, digest, args)
                src.unlink()
                up_node, down_node = float(str(up["seconds"])), float(str(down["seconds"]))
                tag = "warm-up" if rnd == 0 else f"round {rnd}"
                print(
                    f"{tag:<8} {cfg.key} {cfg.label:<17} upload {mb / up_s:5.1f} MB/s "
                    f"({up_s:5.2f} s wall, {up_node:5.2f} s in the node)   download "
                    f"{mb / down_s:5.1f} MB/s ({down_s:5.2f} s, {down_node:5.2f} s)",
                    flush=True,
                )
                if rnd == 0:
                    continue
                r = runs[cfg.key]
                r.up_wall.append(mb / up_s)
                r.up_node.append(mb / up_node)
                r.down_wall.append(mb / down_s)
                r.down_node.append(mb / down_node)
                r.cli_rss = max(r.cli_rss, up_rss)
        print(f"done; {load()}")
        report(runs, by_tls, args.rounds)


if __name__ == "__main__":
    main()
