"""Fixtures shared by every test."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx


def pytest_configure(config: pytest.Config) -> None:
    """Let the processes tests start see ctrl-C as a user's would.

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored
    in every child; tests that send SIGINT to our processes (expecting exit code 130) would
    then see them carry on. A handler in this process is reset to the default in children.
    """
    del config
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test that makes a blocking call (file, socket, sleep) on a running event loop."""
    with blockbuster_ctx() as bb:
        yield bb


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Give each test its own config and data dirs and no P2PSHARE_* variables of the caller."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.upper().startswith("P2PSHARE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    return home
