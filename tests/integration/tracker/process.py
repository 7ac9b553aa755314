"""``p2pshare tracker`` as a real process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

START_TIMEOUT = 30.0


def free_port() -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TrackerProcess:
    """One tracker process; :meth:`start` it, always :meth:`stop` it (``kill`` on the way)."""

    data_dir: Path
    log_dir: Path
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and wait until ``/v1/health`` answers."""
        self.starts += 1
        out = (self.log_dir / f"tracker-{self.starts}.out").open("wb")
        err = (self.log_dir / f"tracker-{self.starts}.err").open("wb")
        with out, err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "p2pshare",
                    "tracker",
                    "--port",
                    str(self.port),
                    "--data",
                    str(self.data_dir),
                    *self.args,
                ],
                stdout=out,
                stderr=err,
                env={**os.environ, "P2PSHARE_LOG_LEVEL": "INFO"},
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tracker exited with {self.proc.returncode}: {self.stderr()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"tracker did not answer within {START_TIMEOUT} s: {self.stderr()}")

    def stdout(self) -> str:
        return (self.log_dir / f"tracker-{self.starts}.out").read_text()

    def stderr(self) -> str:
        return (self.log_dir / f"tracker-{self.starts}.err").read_text()[-3000:]

    def signal(self, sig: int) -> int:
        """Send ``sig`` and return the exit code (waits at most 20 s)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)

    def stop(self) -> None:
        """Kill the process if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)
