"""``p2pshare upload`` and ``download``: start a transfer on the local node and follow it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.prompt import Confirm, Prompt
from rich.table import Table

from p2pshare.cli.common import Interrupted, control, print_json, shown_address
from p2pshare.cli.network_cmds import NodeOption
from p2pshare.core.chunking import validate_chunk_size
from p2pshare.core.errors import InvalidInput, InvalidSize, P2PShareError
from p2pshare.core.links import encode_key, parse_link
from p2pshare.core.messages import NodeInfo
from p2pshare.core.node_messages import (
    DownloadRequest,
    TransferEvent,
    TransferInfo,
    TransferResult,
    UploadRequest,
)
from p2pshare.core.sizes import format_size, parse_size
from p2pshare.node.control_client import ControlClient

if TYPE_CHECKING:
    from p2pshare.cli.app import Context

PHASES = {
    "planned": "starting",
    "hashing": "hashing",
    "reserving": "reserving",
    "pushing": "sending",
    "registering": "registering",
    "fetching": "fetching",
    "verifying": "verifying",
}


def resolve_allocation(peers: list[NodeInfo], alloc: list[str]) -> dict[str, int]:
    """Return ``{node_id: bytes}`` for ``--alloc NAME=SIZE`` flags (NAME: a node's name or id).

    Raises :class:`InvalidInput` for a malformed flag, an unknown node, an ambiguous name or a
    size that does not parse.
    """
    out: dict[str, int] = {}
    for item in alloc:
        who, sep, size = item.partition("=")
        if not sep or not who or not size:
            raise InvalidInput(f"--alloc {item!r}: expected NAME=SIZE, e.g. node-b=2GiB")
        matches = [p for p in peers if who in (p.node_id, p.name)]
        if not matches:
            known = ", ".join(sorted(p.name for p in peers)) or "none"
            raise InvalidInput(f"--alloc {item!r}: no online node named {who!r} (online: {known})")
        if len(matches) > 1:
            raise InvalidInput(f"--alloc {item!r}: several nodes are named {who!r}; use the id")
        try:
            out[matches[0].node_id] = parse_size(size)
        except InvalidSize as exc:
            raise InvalidSize(f"--alloc {item!r}: {exc.detail}") from None
    return out


def _ask_allocation(peers: list[NodeInfo], console: Console) -> dict[str, int] | None:
    """Ask, per node, how much to use (upload step 3); None = spread by free space."""
    console.print("How much space to use on each node? Enter a size (e.g. 2GiB), 0 to skip it,")
    console.print("or just press Enter on the first question to spread by free space.")
    out: dict[str, int] = {}
    for i, p in enumerate(peers):
        while True:
            answer = Prompt.ask(
                f"  {p.name} ({format_size(p.free_bytes)} free)",
                default="",
                console=console,
                show_default=False,
            )
            if i == 0 and not answer.strip():
                return None
            try:
                size = parse_size(answer.strip() or "0")
            except P2PShareError as exc:
                console.print(f"  [red]{exc.detail}[/red]")
                continue
            break
        if size:
            out[p.node_id] = size
    return out


def follow(
    client: ControlClient, info: TransferInfo, *, show: bool, console: Console
) -> TransferResult:
    """Follow a transfer's events to the end; return its result or raise its error.

    ctrl-C cancels the transfer on the node (it stays resumable) and raises
    :class:`Interrupted`.
    """
    progress = Progress(
        TextColumn("[progress.description]{task.description:<11}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show,
    )
    last: TransferEvent | None = None
    try:
        with progress:
            task = progress.add_task("starting", total=None)
            for event in client.events(info.transfer_id):
                last = event
                progress.update(
                    task,
                    description=PHASES.get(event.state, event.state),
                    completed=event.done_bytes,
                    total=event.total_bytes or None,
                )
    except KeyboardInterrupt:
        client.cancel(info.transfer_id)
        raise Interrupted(f"{info.kind} stopped; run the same command again to resume") from None
    if last is None or last.state != "completed" or last.result is None:
        if last is not None and last.error:
            raise P2PShareError(last.error)
        raise P2PShareError(f"{info.kind} ended without a result ({last.state if last else '?'})")
    return last.result


def upload_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The file to upload.", show_default=False)],
    replicas: Annotated[
        int | None,
        typer.Option(
            "--replicas",
            min=1,
            max=16,
            help="Holders per chunk besides you [default: the configured one, 2].",
            show_default=False,
        ),
    ] = None,
    alloc: Annotated[
        list[str] | None,
        typer.Option(
            "--alloc",
            metavar="NAME=SIZE",
            help="Space to use on a node (repeatable); skips the question.",
        ),
    ] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="Spread by free space; skips the question.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Start without asking to confirm.")] = (
        False
    ),
    chunk_size: Annotated[
        str | None, typer.Option("--chunk-size", help="e.g. 8MiB [default: the configured one].")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name to register.")] = None,
    encrypt: Annotated[
        bool | None,
        typer.Option(
            "--encrypt/--no-encrypt",
            help="Encrypt every chunk before it leaves this node; only holders of the share "
            "link can read the file [default: the configured one: off in development, on in "
            "production].",
            show_default=False,
        ),
    ] = None,
    node: NodeOption = None,
) -> None:
    """Upload FILE: pick holders, cut it into chunks, push them, register it at the tracker.

    On a terminal you are shown the online nodes and asked how much space to use on each;
    --alloc or --auto answer that for scripts. Prints the share link others download it
    with: p2pshare://FILE_ID, and #KEY after it for an encrypted file.
    """
    c: Context = ctx.obj
    copies = replicas if replicas is not None else c.settings.replicas
    path = file.expanduser().absolute()
    if path.is_dir():
        raise InvalidInput(f"{file}: is a directory, not a file")
    if not path.is_file():
        raise InvalidInput(f"{file}: no such file")
    if alloc and auto:
        raise InvalidInput("--alloc and --auto exclude each other")
    try:  # checked here too, so a bad one is refused before the node starts anything
        size_arg = validate_chunk_size(parse_size(chunk_size)) if chunk_size else None
    except InvalidSize as exc:
        raise InvalidSize(f"--chunk-size {chunk_size}: {exc.detail}") from None
    console = Console(stderr=c.json, soft_wrap=True)
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not c.json

    client = control(c, node)
    peers = client.peers()
    if not c.json:
        table = Table("name", "address", "free", title="online nodes with free space")
        for p in peers:
            table.add_row(p.name, shown_address(p.address), format_size(p.free_bytes))
        console.print(table)
    if alloc:
        allocation: dict[str, int] | None = resolve_allocation(peers, alloc)
    elif auto:
        allocation = None
    elif interactive:
        allocation = _ask_allocation(peers, console)
    else:
        raise InvalidInput(
            "no terminal to ask how much space to use: pass --auto or --alloc NAME=SIZE"
        )
    if interactive and not yes:
        what = (
            "spread by free space"
            if allocation is None
            else ", ".join(
                f"{p.name}={format_size(allocation[p.node_id])}"
                for p in peers
                if p.node_id in allocation
            )
        )
        if not Confirm.ask(
            f"Upload {path.name} with {copies} replicas ({what})?",
            default=True,
            console=console,
        ):
            raise Interrupted("upload not started")
    info = client.start_upload(
        UploadRequest(
            path=str(path),
            name=name,
            replicas=copies,
            allocation=allocation,
            chunk_size=size_arg,
            encrypt=encrypt if encrypt is not None else c.settings.encrypt,
        )
    )
    result = follow(client, info, show=not c.json, console=console)
    if c.json:
        print_json(result.model_dump(mode="json"))
        return
    print_upload_summary(console, result)


def print_upload_summary(console: Console, result: TransferResult) -> None:
    """Print an upload's one-line summary, where its chunks went, and the file id."""
    rate = result.size / result.seconds / 2**20 if result.seconds > 0 else 0.0
    console.print(
        f"uploaded {result.name}: {format_size(result.size)} in {result.chunks} "
        f"chunk{'' if result.chunks == 1 else 's'}, "
        f"{result.replicas} replica{'' if result.replicas == 1 else 's'}, "
        f"{result.seconds:.1f}s ({rate:.1f} MiB/s)"
    )
    for h in result.holders:
        chunks = f"{h.chunks} chunk{'' if h.chunks == 1 else 's'}"
        address = shown_address(h.address)
        console.print(f"  {h.name:<16} {address:<28} {chunks}, {format_size(h.bytes)}")
    console.print(f"file id: [bold]{result.file_id}[/bold]")
    if result.encrypted:
        console.print(
            f"share link (anyone with it can read the file): [bold]{result.share_link}[/bold]"
        )


def print_download_summary(console: Console, result: TransferResult) -> None:
    """Print a download's one-line summary and which nodes served it."""
    rate = result.size / result.seconds / 2**20 if result.seconds > 0 else 0.0
    checked = "verified" if result.sha256_checked else "as uploaded, not re-hashed"
    console.print(
        f"downloaded {result.name} to {result.path}: {format_size(result.size)} in "
        f"{result.seconds:.1f}s ({rate:.1f} MiB/s), every chunk verified against the file id; "
        f"sha256 {result.sha256} {checked}"
    )
    if result.holders:
        console.print(
            "  from " + ", ".join(f"{s.name} ({s.chunks} chunks)" for s in result.holders)
        )


def download_cmd(
    ctx: typer.Context,
    file_id: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="The file's id, or its share link p2pshare://FILE_ID[#KEY] (an encrypted "
            "file needs the link with its key).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Where to write it [default: ./NAME].", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    check_sha256: Annotated[
        bool,
        typer.Option(
            "--check-sha256",
            help="Also hash the whole file and compare it with the SHA-256 the uploader "
            "registered (one more pass over the file; every chunk is verified against the "
            "file id either way).",
        ),
    ] = False,
    node: NodeOption = None,
) -> None:
    """Download a file by its id or share link, from several holders at once, verifying
    every byte against the file id (and decrypting an encrypted file with the key in its
    link)."""
    c: Context = ctx.obj
    link = parse_link(file_id)
    key = encode_key(link.key) if link.key is not None else None
    console = Console(stderr=c.json, soft_wrap=True)

    client = control(c, node)
    detail = client.file(link.file_id)
    part = None
    if detail.manifest.sealed is not None:
        # an encrypted file's name is sealed: no key, or the wrong one, is refused here (the
        # sealing code is imported for encrypted files only: a CLI's start is on the clock)
        from p2pshare.transfer.privacy import opened

        part = opened(detail.manifest, link.key)
    output = output or Path(part.name if part is not None else detail.manifest.name)
    info = client.start_download(
        DownloadRequest(
            file_id=link.file_id,
            path=str(output.expanduser().absolute()),
            force=force,
            key=key,
            check_sha256=check_sha256,
        )
    )
    result = follow(client, info, show=not c.json, console=console)
    if c.json:
        print_json(
            {
                "file_id": result.file_id,
                "name": result.name,
                "encrypted": result.encrypted,
                "path": result.path,
                "sha256": result.sha256,
                "sha256_checked": result.sha256_checked,
                "bytes": result.size,
                "seconds": result.seconds,
                "sources": [s.model_dump(mode="json") for s in result.holders],
            }
        )
        return
    print_download_summary(console, result)
