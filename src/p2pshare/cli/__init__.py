"""The command line (Typer + rich): the only room that prints."""
