"""Upload and download of one big file among local nodes (a figure, not a test).

usage: python bench/transfer.py [--size 1GiB] [--chunk-size 4MiB] [--replicas 2]

Starts a real tracker and four real node processes on loopback (the test harness of
``tests/integration/network``) and writes a file of random bytes. n1 uploads it with
``--replicas`` holders per chunk among n2/n3 (``--auto``; n4 is stopped meanwhile); then n4
starts again and downloads it (it holds none of it, so it fetches every chunk). Both are
driven by the real CLI. Prints MB/s (from the CLI's wall time) and the peak RSS (VmHWM) of
every process: the tracker, each node, and each CLI run. All share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from p2pshare.core.sizes import format_size, parse_size

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: the test harness
from tests.integration.network.cluster import Node, _clean_env, cluster, make_file


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1GiB")
    p.add_argument("--chunk-size", default="4MiB")
    p.add_argument("--replicas", type=int, default=2)
    args = p.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="p2pshare-bench-") as tmp:
        root = Path(tmp)
        src = root / "big.bin"
        digest = make_file(src, size)
        storage = format_size(size * 2).replace(" ", "")
        with cluster(root / "net", nodes=4, storage=storage) as c:
            n1, n4 = c.nodes["n1"], c.nodes["n4"]
            # n4 downloads: it must not be a holder, so it joins after the upload
            c.kill("n4")
            c.wait_offline(n4)
            up, up_s, up_rss = run_cli(
                n1,
                "upload",
                str(src),
                "--auto",
                "--replicas",
                str(args.replicas),
                "--chunk-size",
                args.chunk_size,
            )
            n4 = c.start_node("n4", storage)
            c.wait_online(4)
            out = root / "copy.bin"
            down, down_s, down_rss = run_cli(n4, "download", str(up["file_id"]), "-o", str(out))
            if down["sha256"] != digest:
                raise SystemExit("the downloaded file differs from the original")
            mb = size / 1e6
            print(
                f"file {format_size(size)}, chunks {args.chunk_size}, "
                f"{args.replicas} replicas besides the uploader, 4 nodes on loopback"
            )
            print(
                f"upload    {mb / up_s:8.1f} MB/s  ({up_s:.2f} s wall, {up['seconds']} s in the"
                f" node; {mb * args.replicas / up_s:.1f} MB/s written to holders)"
            )
            print(
                f"download  {mb / down_s:8.1f} MB/s  ({down_s:.2f} s wall, {down['seconds']} s in"
                " the node)"
            )
            assert c.tracker is not None
            print("peak RSS (VmHWM):")
            print(f"  tracker        {format_size(peak_rss(c.tracker.popen.pid))}")
            for name, node in sorted(c.nodes.items()):
                print(f"  node {name:<9} {format_size(peak_rss(node.proc.popen.pid))}")
            print(f"  cli upload     {format_size(up_rss)}")
            print(f"  cli download   {format_size(down_rss)}")


if __name__ == "__main__":
    main()
