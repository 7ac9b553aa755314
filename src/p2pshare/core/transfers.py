"""The states of a transfer and the moves between them, in one table (pure).

Upload:   planned -> hashing -> reserving -> pushing -> registering -> completed
Download: planned -> fetching -> verifying -> completed
Any state before ``completed`` may go to ``failed`` or ``cancelled``; an upload that lost a
holder goes back from ``pushing`` to ``reserving`` to place its chunks elsewhere; one with
nothing to send (an empty file, or a resumed upload whose chunks were all acked) goes from
``hashing`` straight to ``registering``. ``completed``,
``failed`` and ``cancelled`` are final.
"""

from __future__ import annotations

from p2pshare.core.node_messages import TransferKind, TransferState

FINAL: frozenset[TransferState] = frozenset({"completed", "failed", "cancelled"})

_MOVES: dict[TransferKind, dict[TransferState, frozenset[TransferState]]] = {
    "upload": {
        "planned": frozenset({"hashing"}),
        "hashing": frozenset({"reserving", "registering"}),
        "reserving": frozenset({"pushing", "registering"}),
        "pushing": frozenset({"reserving", "registering"}),
        "registering": frozenset({"completed"}),
    },
    "download": {
        "planned": frozenset({"fetching"}),
        "fetching": frozenset({"verifying"}),
        "verifying": frozenset({"completed"}),
    },
}


def can_move(kind: TransferKind, current: TransferState, new: TransferState) -> bool:
    """Return whether a ``kind`` transfer may go from ``current`` to ``new``."""
    if current in FINAL:
        return False
    if new in {"failed", "cancelled"}:
        return True
    return new in _MOVES[kind].get(current, frozenset())
