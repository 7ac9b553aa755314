"""The ``p2pshare`` command's entry point: the CLI is imported with the garbage collector paused.

Starting imports aiohttp, pydantic, typer and rich and builds our models: several hundred
thousand objects, nearly all kept for the life of the process. The collector would walk them
again and again while they are made, for nothing. Paused meanwhile, ``p2pshare --version``
took 504-570 ms of CPU here against 590-685 ms (8 starts each way, alternated 4 times); three
downloads started at once spend that on the same two cores as the transfers. The objects are
then frozen out of later full collections, which a node or a tracker runs for hours.
"""

from __future__ import annotations

import gc


def run() -> None:
    """Import the CLI with the collector paused, then run it and exit with its code."""
    gc.disable()
    try:
        from p2pshare.cli.app import run as run_cli
    finally:
        gc.freeze()
        gc.enable()
    run_cli()
