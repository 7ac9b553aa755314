"""The atheris harness (fuzz/fuzz_parsers.py) runs, executes inputs and finds no crash.

A short, seeded run (``-seed=1``, at most 15 s): long enough to show the harness is wired up
and its targets are covered, short enough for every test run. Longer runs are ``make fuzz``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_parsers.py"
SECONDS = 15
MIN_RUNS = 1000
MIN_COVERAGE = 50
"""Edges covered by the end; the harness's targets alone make about 140."""


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 75)
def test_fuzz_harness_runs_clean(tmp_path: Path) -> None:
    """A bounded run exits 0 after more than MIN_RUNS inputs with coverage feedback."""
    pytest.importorskip("atheris", reason="atheris is not installed (only Linux x86_64 wheels)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            "-seed=1",
            f"-max_total_time={SECONDS}",
            "-runs=2000000",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
        check=False,
    )
    log = proc.stderr + proc.stdout
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert proc.returncode == 0, f"exit {proc.returncode}, artifacts {crashes}:\n{log[-4000:]}"
    assert crashes == []
    done = re.search(r"^Done (\d+) runs in (\d+) second", log, re.MULTILINE)
    assert done is not None, log[-2000:]
    assert int(done.group(1)) > MIN_RUNS, done.group(0)
    coverage = [int(c) for c in re.findall(r"^#\d+\s+\w+\s+cov: (\d+)", log, re.MULTILINE)]
    assert coverage, log[-2000:]
    assert max(coverage) >= MIN_COVERAGE, f"coverage {max(coverage)}: is p2pshare instrumented?"
    assert any(corpus.iterdir()), "libFuzzer kept no input in the corpus"
