"""``python -m p2pshare`` runs the CLI."""

from p2pshare.cli.entry import run

run()
