"""The ``p2pshare`` command as a real process: output, one-line errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from p2pshare import __version__
from p2pshare.core.manifest import Manifest, manifest_of_bytes


def run(
    *args: str, env: dict[str, str] | None = None, python_flags: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; with ``python_flags`` the first two arguments go to Python itself."""
    flags, args = (args[:2], args[2:]) if python_flags else ((), args)
    return subprocess.run(
        [sys.executable, *flags, "-m", "p2pshare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("p2pshare: error: "), lines
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_help_lists_commands() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for word in ("config", "manifest", "tracker", "node", "upload", "download", "demo", "--json"):
        assert word in proc.stdout


def run_probe(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; return the lines it printed."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_the_entry_point_runs_commands_with_the_collector_on() -> None:
    # the CLI is imported with the garbage collector paused (cli/entry.py); a node or tracker
    # started from it must run with it on again, or its memory would only grow
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('collector on:', gc.isenabled()))\n"
        "sys.argv = ['p2pshare', '--version']\n"
        "from p2pshare.cli.entry import run\n"
        "run()\n"
    )
    assert run_probe(probe) == [f"p2pshare {__version__}", "collector on: True"]


@pytest.mark.parametrize(("preset", "expected"), [(None, "__all__ ()"), ("", " found")])
def test_the_entry_point_turns_off_pydantic_s_plugin_lookup_unless_the_user_set_it(
    preset: str | None, expected: str
) -> None:
    # pydantic reads every installed distribution's entry points for plugins as it builds its
    # first model (cli/entry.py); p2pshare uses none. A value the user set is kept: an empty
    # one has pydantic look them up (it then keeps what it found, an empty dict here)
    probe = (
        "import atexit, os, sys\n"
        + ("" if preset is None else f"os.environ['PYDANTIC_DISABLE_PLUGINS'] = {preset!r}\n")
        + "def report():\n"
        "    from pydantic.plugin import _loader\n"
        "    plugins = _loader.get_plugins()\n"
        "    print(os.environ['PYDANTIC_DISABLE_PLUGINS'],"
        " 'found' if _loader._plugins is not None else plugins)\n"
        "atexit.register(report)\n"
        "sys.argv = ['p2pshare', '--json', 'config']\n"
        "from p2pshare.cli.entry import run\n"
        "run()\n"
    )
    assert run_probe(probe)[-1] == expected


def test_the_entry_point_imports_aiohttp_without_the_system_cas() -> None:
    # loading the CA bundle twice cost about 110 ms of every start (cli/entry.py); p2pshare pins
    # every https address, so aiohttp's default contexts must trust nothing, and the
    # environment must be as the user left it afterwards
    probe = (
        "import os, ssl\n"
        "os.environ.pop('SSL_CERT_FILE', None)\n"
        "os.environ['SSL_CERT_DIR'] = 'the-users-dir'\n"
        "from p2pshare.cli.entry import import_aiohttp_without_system_cas\n"
        "import_aiohttp_without_system_cas()\n"
        "from aiohttp import connector\n"
        "contexts = (connector._SSL_CONTEXT_VERIFIED, connector._SSL_CONTEXT_UNVERIFIED)\n"
        "print([c.cert_store_stats()['x509_ca'] for c in contexts])\n"
        "print(os.environ.get('SSL_CERT_FILE'), os.environ['SSL_CERT_DIR'])\n"
        "print(ssl.create_default_context().cert_store_stats()['x509_ca'] > 0)\n"
    )
    # the last line shows that the restored environment loads the system's CAs again: the
    # first one means something
    assert run_probe(probe) == ["[0, 0]", "None the-users-dir", "True"]


def test_the_cli_builds_only_the_messages_it_uses_and_servers_build_them_all() -> None:
    # a message's validator is built at its first use (core.messages.Message): the CLI starts
    # about 10% sooner; a server builds them all as it starts (build_messages)
    probe = (
        "from p2pshare.cli import app\n"
        "from p2pshare.core import messages, node_messages\n"
        "every = [messages.Message]\n"
        "for cls in every: every.extend(cls.__subclasses__())\n"
        "print(sum(not c.__pydantic_complete__ for c in every) > 20)\n"
        "messages.build_messages()\n"
        "print(all(c.__pydantic_complete__ for c in every))\n"
        "print(not any(c.model_config['defer_build'] for c in every))\n"
        "page = messages.Page[messages.FileSummary]\n"  # made after: built at once
        "print(page.__pydantic_complete__)\n"
    )
    assert run_probe(probe) == ["True"] * 4


def test_manifest_json_matches_the_library(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "f.bin").write_bytes(data)
    proc = run("--json", "manifest", str(tmp_path / "f.bin"), "--chunk-size", "64KiB")
    assert proc.returncode == 0, proc.stderr
    got = Manifest.parse(proc.stdout)
    want = manifest_of_bytes(data, "f.bin", got.created, 64 * 1024)
    assert got == want
    assert abs((datetime.now(UTC) - got.created).total_seconds()) < 120


def test_manifest_human_output(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"hello")
    proc = run("manifest", str(tmp_path / "f.bin"))
    assert proc.returncode == 0, proc.stderr
    assert "file id" in proc.stdout
    assert manifest_of_bytes(b"hello", "f.bin", datetime.now(UTC), 4 * 2**20).file_id in proc.stdout


def test_config_json_shows_values_and_sources(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('storage = "2GiB"\n')
    proc = run(
        "--env",
        "production",
        "--config",
        str(cfg),
        "--json",
        "config",
        env={"P2PSHARE_CHUNK_SIZE": "1MiB"},
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["env"] == {"value": "production", "source": "flag --env"}
    assert doc["storage"] == {"value": 2 * 1024**3, "source": str(cfg)}
    assert doc["chunk_size"]["source"] == "environment variable P2PSHARE_CHUNK_SIZE"
    assert doc["log_format"] == {"value": "json", "source": "profile production"}


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["manifest", "/definitely/not/here"], 1, "no such file"),
        (["manifest", "{tmp}"], 1, "is a directory"),
        (["manifest", "{tmp}/f", "--chunk-size", "3MB"], 1, "power of two"),
        (["manifest", "{tmp}/f", "--chunk-size", "lots"], 1, "not a size"),
        (["--env", "staging", "config"], 1, "unknown profile 'staging'"),
        (["--config", "{tmp}/absent.toml", "config"], 1, "config file not found"),
        (["--config", "{tmp}/bad.toml", "config"], 1, "unknown key 'colour'"),
        (["nosuchcommand"], 2, "No such command"),
        (["manifest"], 2, "Missing argument"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "bad.toml").write_text('colour = "blue"\n')
    proc = run(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert_one_line_error(proc, code, needle)
    assert proc.stdout == ""


def test_bad_environment_variable(tmp_path: Path) -> None:
    proc = run("config", env={"P2PSHARE_STORAGE": "-5"})
    assert_one_line_error(proc, 1, "P2PSHARE_STORAGE")


def test_a_node_listening_everywhere_needs_a_public_address(tmp_path: Path) -> None:
    proc = run("node", "--host", "0.0.0.0", "--data", str(tmp_path / "n"))
    assert_one_line_error(proc, 1, "--public-address")
    assert not (tmp_path / "n").exists()


def test_the_cli_says_how_to_start_a_node_when_none_answers(tmp_path: Path) -> None:
    proc = run("peers", "--node", "http://127.0.0.1:9")
    assert_one_line_error(proc, 1, "start one with 'p2pshare node'")


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:7072", "http://127.0.0.1:port", "ftp://127.0.0.1:7072", "x"]
)
def test_a_control_url_the_cli_cannot_use_is_refused(url: str) -> None:
    proc = run("files", "--node", url)
    assert_one_line_error(proc, 1, "a node's control URL is http://HOST:PORT")


@pytest.mark.parametrize("args", [["peers"], ["download", "ab" * 32, "-o", "out.bin"]])
def test_commands_that_talk_to_a_node_do_not_import_aiohttp(args: list[str]) -> None:
    """Their control client is the standard library's: a CLI's start (three at once in the
    bench, beside the transfers) does not pay for aiohttp's import, nor for the sealing code
    (imported by a download of an encrypted file only)."""
    proc = run("-X", "importtime", *args, "--node", "http://127.0.0.1:9", python_flags=True)
    assert proc.returncode == 1, proc
    imported = [line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert "p2pshare.node.control_client" in imported  # the check sees our own imports
    assert [name for name in imported if name.split(".")[0] == "aiohttp"] == []
    assert "p2pshare.security.sealing" not in imported
