"""``p2pshare peers``, ``files`` and ``info``: the network as the local node sees it."""

from __future__ import annotations

import sys
import time
from statistics import median
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.prompt import Confirm
from rich.table import Table

from p2pshare.cli.common import Interrupted, control, print_json, shown_address
from p2pshare.core.errors import P2PShareError, Unavailable
from p2pshare.core.ids import validate_id
from p2pshare.core.messages import DrainStatus
from p2pshare.core.sizes import format_size

if TYPE_CHECKING:
    from p2pshare.cli.app import Context

LEAVE_ERRORS = 5
"""Failed status checks in a row a leaving node may cause while it stops."""

NodeOption = Annotated[
    str | None,
    typer.Option(
        "--node",
        help="Control URL of your node [default: the configured one, http://127.0.0.1:7072].",
        show_default=False,
    ),
]


def peers_cmd(ctx: typer.Context, node: NodeOption = None) -> None:
    """List the online nodes with free space (the holders an upload can use)."""
    c: Context = ctx.obj
    nodes = control(c, node).peers()
    if c.json:
        print_json([n.model_dump(mode="json") for n in nodes])
        return
    if not nodes:
        Console().print("no other node is online with free space")
        return
    table = Table("name", "node id", "address", "free", "offered")
    for n in nodes:
        table.add_row(
            n.name,
            n.node_id,
            shown_address(n.address),
            format_size(n.free_bytes),
            format_size(n.offered_bytes),
        )
    Console().print(table)


def files_cmd(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Option("--name", help="Only files whose name contains this.")
    ] = None,
    node: NodeOption = None,
) -> None:
    """List the files registered at the tracker."""
    c: Context = ctx.obj
    page = control(c, node).files(name=name, limit=500)
    if c.json:
        print_json(page.model_dump(mode="json"))
        return
    if not page.items:
        Console().print("no files")
        return
    table = Table("file id", "name", "size", "chunks", "downloads", "created")
    for f in page.items:
        table.add_row(
            f.file_id,
            f.name,
            format_size(f.size),
            str(f.chunks),
            str(f.downloads),
            f.created.strftime("%Y-%m-%d %H:%M"),
        )
    Console().print(table)
    if page.total > len(page.items):
        Console().print(f"... {page.total - len(page.items)} more (use --name to narrow)")


def delete_cmd(
    ctx: typer.Context,
    file_id: Annotated[str, typer.Argument(help="The file's id.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm.")] = False,
    node: NodeOption = None,
) -> None:
    """Withdraw a file you uploaded; every node holding its chunks deletes them.

    Only the node that uploaded the file may withdraw it. Holders free the space on their
    next heartbeat (chunks another file still uses are kept).
    """
    c: Context = ctx.obj
    validate_id(file_id, "file id")
    client = control(c, node)
    if not yes and not c.json and sys.stdin.isatty() and sys.stdout.isatty():
        detail = client.file(file_id)
        question = (
            f"Withdraw {detail.manifest.name} ({format_size(detail.manifest.size)}) "
            "from the network?"
        )
        if not Confirm.ask(question, default=False):
            raise Interrupted("nothing withdrawn")
    receipt = client.delete_file(file_id)
    if c.json:
        print_json({"file_id": file_id, "deleted_at": receipt.at.isoformat()})
        return
    Console().print(f"withdrawn {file_id}; holders will free its space on their next heartbeat")


def leave_cmd(
    ctx: typer.Context,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="S", min=1, help="Give up waiting after S seconds."),
    ] = 3600,
    node: NodeOption = None,
) -> None:
    """Leave the network gracefully: your node's chunks are copied to other nodes first.

    Every file keeps its replica target. The node stops by itself once nothing depends on it;
    this command waits for that (ctrl-C stops waiting, not the leaving).
    """
    c: Context = ctx.obj
    client = control(c, node)
    console = Console(stderr=True)

    def work() -> DrainStatus:
        status = client.leave()
        deadline = time.monotonic() + timeout
        errors = 0
        with console.status("") as spinner:
            while status.chunks_waiting:
                spinner.update(
                    f"copying this node's chunks elsewhere: {status.chunks_waiting} of "
                    f"{status.chunks_held} still wait"
                )
                time.sleep(1)
                try:
                    status = client.leave_status()
                except Unavailable:
                    return status.model_copy(update={"chunks_waiting": 0})  # it stopped: left
                except P2PShareError:
                    errors += 1  # the node may be stopping right now: look again
                    if errors > LEAVE_ERRORS:
                        raise
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"{status.chunks_waiting} chunks still wait for a copy after "
                        f"{timeout:.0f}s; the node keeps leaving (run 'p2pshare leave' again)"
                    )
        return status

    status = work()
    if c.json:
        print_json(status.model_dump(mode="json"))
        return
    Console().print(
        f"left the network: the {status.chunks_held} chunks this node held are on other nodes"
    )


def info_cmd(
    ctx: typer.Context,
    file_id: Annotated[str, typer.Argument(help="The file's id.", show_default=False)],
    node: NodeOption = None,
) -> None:
    """Show a file: its manifest, where its chunks are, and how healthy it is."""
    c: Context = ctx.obj
    validate_id(file_id, "file id")
    d = control(c, node).file(file_id)
    online = [ch.replicas_online for ch in d.chunks]
    doc = {
        "file_id": d.manifest.file_id,
        "name": d.manifest.name,
        "size": d.manifest.size,
        "sha256": d.manifest.sha256,
        "chunks": len(d.manifest.chunk_ids),
        "chunk_size": d.manifest.chunk_size,
        "owner": d.owner,
        "state": d.state,
        "replica_target": d.replica_target,
        "replicas_min": min(online) if online else 0,
        "replicas_median": median(online) if online else 0,
        "under_target": sum(r < d.replica_target for r in online),
        "holders_online": d.holders_online,
        "seeders": [s.name for s in d.seeders],
        "leechers": [s.name for s in d.leechers],
        "downloads": d.downloads,
        "last_audit": d.last_audit.isoformat() if d.last_audit else None,
    }
    if c.json:
        print_json(doc)
        return
    console = Console()
    console.print(f"[bold]{d.manifest.name}[/bold]  {format_size(d.manifest.size)}")
    for key in (
        "file_id",
        "sha256",
        "owner",
        "state",
        "chunks",
        "replica_target",
        "replicas_min",
        "replicas_median",
        "under_target",
        "holders_online",
        "downloads",
    ):
        console.print(f"{key:16} {doc[key]}")
    console.print(f"{'last_audit':16} {doc['last_audit'] or 'never'}")
    console.print(f"{'seeders':16} {', '.join(doc['seeders']) or '-'}")  # type: ignore[arg-type]
    console.print(f"{'leechers':16} {', '.join(doc['leechers']) or '-'}")  # type: ignore[arg-type]
