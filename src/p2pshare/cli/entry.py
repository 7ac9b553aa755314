"""The ``p2pshare`` command's entry point: the CLI is imported as cheaply as it can be.

Starting imports pydantic, typer and rich and builds our models: several hundred thousand
objects, nearly all kept for the life of the process. Three things make that dearer than it
need be, and all are avoided here:

- The garbage collector would walk those objects again and again while they are made, for
  nothing. Paused meanwhile, ``p2pshare --version`` took 504-570 ms of CPU here against
  590-685 ms (8 starts each way, alternated 4 times). The objects are then frozen out of later
  full collections, which a node or a tracker runs for hours (:func:`imports`).
- The commands that talk to a node (``upload``, ``download``, ``peers``, ...) do not import
  aiohttp at all: their control client is the standard library's
  (:mod:`p2pshare.node.control_client`). Only ``node``, ``tracker`` and ``demo`` import it,
  after the command line is parsed.
- aiohttp builds its two default TLS contexts as it is imported, and each loads the system's
  CA bundle (about 55 ms each here). p2pshare never trusts those authorities: every https
  address it calls carries the other side's certificate fingerprint (``node.http.prepare``
  refuses one without), and a pinned call checks that fingerprint, not a chain. So aiohttp is
  imported with the CA locations pointed at nothing (:func:`import_aiohttp_without_system_cas`),
  and the environment is put back at once: its default contexts hold no authority, and a call
  that relied on them would be refused.

- pydantic looks for plugins of its own (observability hooks) as it builds its first model:
  it reads the entry points of every installed distribution. p2pshare uses none, so the
  lookup is turned off (:data:`NO_PYDANTIC_PLUGINS`) unless the user set
  ``PYDANTIC_DISABLE_PLUGINS`` already (to an empty value, say, to have them). It cost
  0.03-0.07 s of a command's CPU here (``p2pshare --json config``: a median 7% of it over 21
  alternated starts, with the 79 distributions of the development environment; 14% for the
  CLI's imports and settings alone over 15).

Three downloads started at once spend these starts on the same two cores as the transfers.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

# the OpenSSL variables that name the default CA file and directory
CA_LOCATIONS = ("SSL_CERT_FILE", "SSL_CERT_DIR")
NO_PYDANTIC_PLUGINS = ("PYDANTIC_DISABLE_PLUGINS", "__all__")
"""pydantic's variable that turns off its plugin lookup, and the value for all plugins"""


def import_aiohttp_without_system_cas() -> None:
    """Import aiohttp with the CA locations pointed at nothing; restore the environment."""
    saved = {name: os.environ.get(name) for name in CA_LOCATIONS}
    try:
        for name in CA_LOCATIONS:
            os.environ[name] = os.devnull
        import aiohttp  # noqa: F401  (builds its default TLS contexts now)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def imports(*, aiohttp: bool = False) -> Iterator[None]:
    """Pause the garbage collector while the block imports; then freeze what it made. With
    ``aiohttp``, the block's imports need it: it is imported first, without the system's CAs."""
    gc.disable()
    try:
        if aiohttp:
            import_aiohttp_without_system_cas()
        yield
    finally:
        gc.freeze()
        gc.enable()


def run() -> None:
    """Import the CLI with the collector paused, then run it and exit with its code."""
    os.environ.setdefault(*NO_PYDANTIC_PLUGINS)  # before the first model is built
    with imports():
        from p2pshare.cli.app import run as run_cli
    run_cli()
