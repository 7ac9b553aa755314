"""The ``p2pshare`` command: global options, subcommands, and the one place errors are printed.

Every command accepts the global ``--json`` and then prints exactly one JSON document on
stdout instead of tables. Errors go to stderr as one line, ``p2pshare: error: ...``, with exit
code 1 (2 for a usage error, 130 for ctrl-C).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from typer._click import exceptions as click_errors  # typer >= 0.29 vendors click

from p2pshare import __version__
from p2pshare.cli.common import Interrupted
from p2pshare.cli.network_cmds import delete_cmd, files_cmd, info_cmd, leave_cmd, peers_cmd
from p2pshare.cli.node_cmd import node_cmd
from p2pshare.cli.tracker_cmd import tracker_cmd
from p2pshare.cli.transfer_cmds import download_cmd, upload_cmd
from p2pshare.config import Settings, describe_sources, load_settings
from p2pshare.core.errors import InvalidInput, P2PShareError
from p2pshare.core.sizes import format_size, parse_size

app = typer.Typer(
    name="p2pshare",
    help="A peer-to-peer file sharing and storage network.\n\n"
    "Nodes offer disk space to each other; a tracker keeps the catalogue of files, nodes and "
    "where every chunk lives.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass(frozen=True)
class Context:
    """What the global options decided, handed to every command."""

    settings: Settings
    json: bool
    profile: str | None
    config_file: Path | None


def _version(value: bool) -> None:
    if value:
        print(f"p2pshare {__version__}")
        raise typer.Exit


@app.callback()
def _main(
    ctx: typer.Context,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            help="Profile: development (default; loopback, verbose logs) or production "
            "(JSON logs). Also P2PSHARE_ENV.",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML settings file (default: p2pshare.toml in your config dir, if present).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of tables.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options; settings are read once, here."""
    settings = load_settings(profile=env, config_file=config)
    ctx.obj = Context(settings=settings, json=json_output, profile=env, config_file=config)


def _emit_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


@app.command("config")
def config_cmd(ctx: typer.Context) -> None:
    """Show the settings in effect and where each one came from.

    Precedence: flags > P2PSHARE_* environment variables > TOML file > profile defaults.
    """
    c: Context = ctx.obj
    sources = describe_sources(c.settings, profile=c.profile, config_file=c.config_file)
    values = c.settings.model_dump(mode="json")
    if c.json:
        _emit_json({k: {"value": values[k], "source": sources[k]} for k in values})
        return
    table = Table("setting", "value", "from")
    for key, value in values.items():
        shown = format_size(value) if key in {"storage", "chunk_size"} else str(value)
        table.add_row(key, shown, sources[key])
    Console().print(table)


@app.command("manifest")
def manifest_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The file to describe.", show_default=False)],
    chunk_size: Annotated[
        str | None, typer.Option(help="Chunk size, e.g. 4MiB (a power of two, 64KiB to 64MiB).")
    ] = None,
) -> None:
    """Hash FILE once and print its manifest: size, chunks, SHA-256 and file id.

    Nothing is stored or sent; this is what an upload will register.
    """
    from p2pshare.storage.hasher import hash_file_sync  # the storage room: this command only

    c: Context = ctx.obj
    size = parse_size(chunk_size) if chunk_size is not None else c.settings.chunk_size
    if file.is_dir():
        raise InvalidInput(f"{file}: is a directory, not a file")
    total = file.stat().st_size if file.is_file() else 0
    created = datetime.now(UTC)
    if c.json or not sys.stderr.isatty():
        manifest = hash_file_sync(file, chunk_size=size, created=created)
    else:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as progress:
            task = progress.add_task("hashing", total=total)
            manifest = hash_file_sync(
                file,
                chunk_size=size,
                created=created,
                on_progress=lambda n: progress.advance(task, n),
            )
    if c.json:
        print(manifest.canonical_json().decode())
        return
    console = Console()
    console.print(f"name       {manifest.name}")
    console.print(f"size       {manifest.size} bytes ({format_size(manifest.size)})")
    console.print(f"chunks     {len(manifest.chunk_ids)} x {format_size(manifest.chunk_size)}")
    console.print(f"sha256     {manifest.sha256}")
    console.print(f"file id    {manifest.file_id}")


app.command("tracker")(tracker_cmd)
app.command("node")(node_cmd)
app.command("peers")(peers_cmd)
app.command("files")(files_cmd)
app.command("info")(info_cmd)
app.command("upload")(upload_cmd)
app.command("download")(download_cmd)
app.command("delete")(delete_cmd)
app.command("leave")(leave_cmd)


@app.command("demo")
def demo_cmd() -> None:
    """Start a tracker and three nodes on loopback, upload 64 MiB and download it elsewhere.

    Each part is its own process, as you would start it by hand. The network keeps running,
    with commands to try printed, until ctrl-C, which stops every process it started.
    """
    from p2pshare.cli.entry import imports

    with imports(aiohttp=True):
        from p2pshare.cli.demo import run_demo

    run_demo(Console(soft_wrap=True))


def _fail(message: str, code: int) -> int:
    print(f"p2pshare: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 error, 2 usage error, 130 interrupted)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="p2pshare", standalone_mode=False)
    except Interrupted as exc:
        return _fail(exc.detail, 130)
    except P2PShareError as exc:
        return _fail(exc.detail, 1)
    except click_errors.NoArgsIsHelpError:
        return 2  # the help text was printed already
    except click_errors.UsageError as exc:
        return _fail(exc.format_message(), 2)
    except typer.Abort:
        return _fail("interrupted", 130)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror}".lstrip(": "), 1)
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point: run :func:`main` and exit with its code."""
    sys.exit(main())
