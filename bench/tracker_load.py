"""Tracker under load: announces and file-detail reads at once (a figure, not a test).

usage: python bench/tracker_load.py [--nodes 64] [--readers 16] [--duration 10] [--warmup 2]
                                    [--files 200] [--chunks 16] [--replicas 3] [--port 0]

Starts a real ``p2pshare tracker`` process on a SQLite file in a temp dir, announces
``--nodes`` nodes and registers ``--files`` files of ``--chunks`` chunks (each chunk on
``--replicas`` nodes). Then, for ``--warmup`` + ``--duration`` seconds, runs in this process
``--nodes`` simulated nodes that announce back to back (closed loop, one connection each: the
worst case, every node announcing as fast as the tracker answers, not every 30 s) and
``--readers`` clients that read ``GET /v1/files/{id}`` of random files. Prints requests/s and
p50/p99/max latency for each kind, counted after the warm-up only. The client (aiohttp) runs
on the same machine and takes CPU from the tracker: on 2 cores the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from p2pshare.core.manifest import ManifestBuilder
from p2pshare.core.messages import ChunkAck, FileRegistration, NodeAnnounce, Placement

CHUNK = 64 * 1024


@dataclass
class Tally:
    """Latencies (seconds) of successful requests after the warm-up, and failures."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def line(self, name: str, seconds: float) -> str:
        if not self.latencies:
            return f"{name:9s} no requests ({self.errors} errors)"
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        return (
            f"{name:9s} {len(lat) / seconds:8.0f} req/s   p50 {p50:6.1f} ms   "
            f"p99 {p99:6.1f} ms   max {lat[-1] * 1000:6.1f} ms   "
            f"({len(lat)} requests, {self.errors} errors)"
        )


def cpu_seconds(pid: int) -> float:
    """Return the user+system CPU time of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def announce_body(i: int, rng: random.Random) -> bytes:
    offered = 100 * 2**30
    used = rng.randrange(0, offered // 2)
    return (
        NodeAnnounce(
            node_id=f"node-{i:05d}",
            name=f"bench node {i}",
            address=f"http://127.0.0.1:{10000 + i}",
            offered_bytes=offered,
            used_bytes=used,
            free_bytes=offered - used,
        )
        .model_dump_json()
        .encode()
    )


def registration(f: int, chunks: int, nodes: int, replicas: int) -> FileRegistration:
    rng = random.Random(f)
    builder = ManifestBuilder(CHUNK)
    for _ in range(chunks):
        builder.add_chunk(rng.randbytes(CHUNK))
    m = builder.finish(f"bench-{f:05d}.bin", datetime(2030, 1, 1, tzinfo=UTC))
    placement, acks = [], []
    for cid in m.chunk_ids:
        holders = [f"node-{n:05d}" for n in rng.sample(range(nodes), replicas)]
        placement.append(Placement(chunk_id=cid, holders=holders))
        acks += [ChunkAck(node_id=h, chunk_id=cid, size=CHUNK) for h in holders]
    return FileRegistration(
        manifest=m, owner="node-00000", replica_target=replicas, placement=placement, acks=acks
    )


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tracker exited with {proc.returncode}")
        try:
            async with session.get(f"{url}/v1/health") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("tracker did not start within 30 s")


async def load(args: argparse.Namespace, url: str, proc: subprocess.Popen) -> None:
    headers = {"content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=args.nodes + args.readers + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await wait_ready(session, url, proc)
        rng = random.Random(0)
        bodies = [announce_body(i, rng) for i in range(args.nodes)]
        for b in bodies:
            async with session.post(f"{url}/v1/nodes/announce", data=b, headers=headers) as r:
                assert r.status == 200, await r.text()
        regs = await asyncio.to_thread(
            lambda: [
                registration(f, args.chunks, args.nodes, args.replicas) for f in range(args.files)
            ]
        )
        file_ids = []
        t0 = time.perf_counter()
        for reg in regs:
            data = reg.model_dump_json().encode()
            async with session.post(f"{url}/v1/files", data=data, headers=headers) as r:
                assert r.status in {200, 201}, await r.text()
            file_ids.append(reg.manifest.file_id)
        reg_time = time.perf_counter() - t0
        print(
            f"registered {len(regs)} files x {args.chunks} chunks x {args.replicas} replicas "
            f"in {reg_time:.2f} s ({reg_time / len(regs) * 1000:.1f} ms each, sequential)"
        )

        if not args.cold:  # every file read once: the load then reads a warm catalogue
            for fid in file_ids:
                async with session.get(f"{url}/v1/files/{fid}") as r:
                    assert r.status == 200, await r.text()

        announces, reads = Tally(), Tally()
        start = time.perf_counter()
        measure_from = start + args.warmup
        stop_at = measure_from + args.duration

        async def node_loop(i: int) -> None:
            body = bodies[i]
            while (now := time.perf_counter()) < stop_at:
                try:
                    async with session.post(
                        f"{url}/v1/nodes/announce", data=body, headers=headers
                    ) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                done = time.perf_counter()
                if now >= measure_from:
                    if ok:
                        announces.latencies.append(done - now)
                    else:
                        announces.errors += 1

        async def reader_loop(seed: int) -> None:
            pick = random.Random(seed)
            while (now := time.perf_counter()) < stop_at:
                fid = pick.choice(file_ids)
                try:
                    async with session.get(f"{url}/v1/files/{fid}") as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                done = time.perf_counter()
                if now >= measure_from:
                    if ok:
                        reads.latencies.append(done - now)
                    else:
                        reads.errors += 1

        async def measure_cpu() -> tuple[float, float]:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            before = cpu_seconds(proc.pid), time.perf_counter()
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            return cpu_seconds(proc.pid) - before[0], time.perf_counter() - before[1]

        async with asyncio.TaskGroup() as tg:
            cpu_task = tg.create_task(measure_cpu())
            for i in range(args.nodes):
                tg.create_task(node_loop(i))
            for j in range(args.readers):
                tg.create_task(reader_loop(j))
        cpu, wall = cpu_task.result()
        print(
            f"load: {args.nodes} announcing nodes + {args.readers} readers "
            f"({'cold' if args.cold else 'warm'} detail cache), "
            f"{args.duration:.0f} s measured after {args.warmup:.0f} s warm-up"
        )
        print(announces.line("announce", args.duration))
        print(reads.line("detail", args.duration))
        total = len(announces.latencies) + len(reads.latencies)
        print(f"{'total':9s} {total / args.duration:8.0f} req/s")
        if total:
            print(
                f"tracker process: {cpu / wall * 100:.0f}% of one core, "
                f"{cpu / total * 1e6:.0f} us CPU per request"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=64)
    p.add_argument("--readers", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument(
        "--cold", action="store_true", help="do not read every file once before the load"
    )
    args = p.parse_args()
    args.replicas = min(args.replicas, args.nodes)

    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        log = Path(tmp) / "tracker.log"
        with log.open("wb") as log_fh:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "p2pshare",
                    "tracker",
                    "--port",
                    str(port),
                    "--data",
                    str(Path(tmp) / "data"),
                ],
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "P2PSHARE_LOG_LEVEL": "INFO",
                },
            )
        try:
            asyncio.run(load(args, url, proc))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        lines = log.read_text().splitlines()
        for line in lines:
            if "file detail cache" in line:
                print("tracker:", line.split(": ", 1)[1])
        if any("Traceback" in line or " ERROR " in line for line in lines):
            print("tracker log:", *lines[-20:], sep="\n  ")


if __name__ == "__main__":
    main()
