"""`p2pshare demo` (what `make demo` runs): a real network on loopback, an upload and a
download that match, and every process gone after ctrl-C, a kill or a closed terminal."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

READY = "press ctrl-C to stop everything"


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(pid))
    return found


class _Output:
    """A process's output lines, read by a thread (a select() on the pipe cannot see lines
    the pipe's reader has already buffered)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()
        self.text = ""

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, needle: str, timeout: float) -> str:
        """Wait for a line with ``needle``; return everything so far."""
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {needle!r} in the output:\n{self.text[-3000:]}")
            self.text += line
        return self.text

    def rest(self, timeout: float) -> str:
        """Wait for the end of the output; return what came after the last call."""
        before = len(self.text)
        self._thread.join(timeout)
        while not self._lines.empty():
            self.text += self._lines.get() or ""
        return self.text[before:]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_the_demo_transfers_a_file_and_stops_every_process(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pshare", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
    )
    try:
        output = _Output(proc)
        out = output.until(READY, timeout=180)
        assert re.search(r"sha256 of the download\s+[0-9a-f]{64}\s+match", out), out[-2000:]
        root = re.search(r"logs: (\S+)/\*\.log", out)
        assert root is not None, out[-2000:]
        assert _processes_mentioning(root.group(1)), "the demo network is not running"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        rest = output.rest(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = _processes_mentioning(root.group(1))
    for pid in left:  # not to leave them running when this fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, rest
    assert "every demo process has exited" in rest
    assert left == []
    assert not Path(root.group(1)).exists()
