"""``p2pshare tracker`` as a real process on a free loopback port, serving TLS (the default).

The URL comes from the process's ready line, ``https://127.0.0.1:PORT#FINGERPRINT``; clients
use it without the ``#FINGERPRINT`` and with ``verify=False`` (the certificate is
self-signed), and :meth:`TrackerProcess.start` checks that the certificate served is the one
the fingerprint pins.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration.tracker.support import SignAsSender

START_TIMEOUT = 30.0
READY = "p2pshare tracker listening on "


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
    listening: str = ""
    """The URL of the ready line, ``https://HOST:PORT#FINGERPRINT`` (``http://`` with
    ``--no-tls``)."""

    @property
    def url(self) -> str:
        """The base URL for a client: the ready line's URL without ``#FINGERPRINT``."""
        assert self.listening, "not started"
        return self.listening.split("#", 1)[0]

    @property
    def fingerprint(self) -> str | None:
        """The certificate fingerprint the ready line pins (None without TLS)."""
        _, sep, pin = self.listening.partition("#")
        return pin if sep else None

    def client(self, **kwargs: Any) -> httpx.Client:
        """Return a client of the tracker that signs as the test node each request speaks
        for (:class:`SignAsSender`); TLS without certificate checks (the fingerprint is
        checked at start)."""
        kwargs.setdefault("timeout", 10)
        return httpx.Client(base_url=self.url, verify=False, auth=SignAsSender(), **kwargs)

    def start(self) -> None:
        """Start the process, wait for its ready line and until ``/v1/health`` answers."""
        self.listening = ""
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
            if not self.listening:
                self.listening = self._ready_url()
            if self.listening:
                try:
                    r = httpx.get(f"{self.url}/v1/health", timeout=1, verify=False)
                    if r.status_code == 200:
                        self._check_pin()
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"tracker did not answer within {START_TIMEOUT} s: {self.stderr()}")

    def _ready_url(self) -> str:
        """Return the URL of the ready line once it is printed, else ''."""
        for line in self.stdout().splitlines():
            if line.startswith(READY):
                return line[len(READY) :].strip()
        return ""

    def _check_pin(self) -> None:
        """Assert the served certificate is the one the ready line's fingerprint names."""
        if self.fingerprint is None:
            assert self.url.startswith("http://"), self.listening
            return
        assert self.url.startswith("https://"), self.listening
        pem = ssl.get_server_certificate(("127.0.0.1", self.port), timeout=5)
        served = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
        assert served == self.fingerprint, (served, self.listening)

    def stdout(self) -> str:
        return (self.log_dir / f"tracker-{self.starts}.out").read_text()

    def stderr(self, *, whole: bool = False) -> str:
        text = (self.log_dir / f"tracker-{self.starts}.err").read_text()
        return text if whole else text[-3000:]

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
