"""A process that checks Ed25519 signatures in batches: ``python -m p2pshare.security.checker``.

The tracker hands the signature checks of the requests it reads to this process (see
``tracker/signatures.py``), so they run on another core than its event loop. A thread would
not do: the check itself runs outside Python's interpreter lock, but the thread needs the
lock between checks and waits for the busy loop to let go of it (measured: batches of 26
checks, each waiting about a switch interval, and the loop idle meanwhile).

The pipe protocol, both ways in order:

- in (stdin): frames of a 4-byte big-endian count N, then N items, each the 32-byte public
  key, the 64-byte signature, the 4-byte big-endian length of the message and the message;
- out (stdout): for each frame, N bytes, in the order of its items: 1 when the signature
  signs the message with the key, 0 when it does not.

The process ends at the end of its input (the tracker stops, or dies: the pipe closes with
it), or when the input is not such frames (then the tracker makes the checks it still waits
for itself).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterable
from typing import BinaryIO

from p2pshare.security.signing import signs

KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_MESSAGE = 64 * 1024
"""Bytes of a message the process takes (a canonical request is a few hundred)."""
MAX_BATCH = 65_536
"""Items of one frame the process takes."""
_ITEM_HEAD = KEY_BYTES + SIGNATURE_BYTES + 4


def frame(items: Iterable[tuple[bytes, bytes, bytes]]) -> bytes:
    """Return the frame of ``items`` (key, signature, message) for the process's input."""
    parts = [b""]
    count = 0
    for key, signature, message in items:
        if len(key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            raise ValueError("a key is 32 bytes and a signature 64")
        if len(message) > MAX_MESSAGE:
            raise ValueError(f"a message of {len(message)} bytes is over {MAX_MESSAGE}")
        parts += [key, signature, len(message).to_bytes(4, "big"), message]
        count += 1
    if count > MAX_BATCH:
        raise ValueError(f"a frame of {count} items is over {MAX_BATCH}")
    parts[0] = count.to_bytes(4, "big")
    return b"".join(parts)


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """Answer the frames of ``source`` on ``sink`` until ``source`` ends (or is not frames:
    then :class:`ValueError`)."""
    read = source.read
    while True:
        head = read(4)
        if not head:
            return
        if len(head) != 4:
            raise ValueError("the input ended inside a frame's count")
        count = int.from_bytes(head, "big")
        if count > MAX_BATCH:
            raise ValueError(f"a frame of {count} items is over {MAX_BATCH}")
        verdicts = bytearray(count)
        for i in range(count):
            item = read(_ITEM_HEAD)
            if len(item) != _ITEM_HEAD:
                raise ValueError("the input ended inside an item")
            length = int.from_bytes(item[-4:], "big")
            if length > MAX_MESSAGE:
                raise ValueError(f"a message of {length} bytes is over {MAX_MESSAGE}")
            message = read(length)
            if len(message) != length:
                raise ValueError("the input ended inside a message")
            if signs(item[:KEY_BYTES], item[KEY_BYTES : KEY_BYTES + SIGNATURE_BYTES], message):
                verdicts[i] = 1
        sink.write(verdicts)
        sink.flush()


def main() -> None:
    """Serve stdin to stdout. ctrl-C in a terminal reaches the whole process group: the
    checker ignores it and ends when the tracker, stopping, closes its input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except ValueError as exc:
        sys.exit(f"signature checker: {exc}")
    except BrokenPipeError:  # the tracker is gone: nobody to answer
        pass


if __name__ == "__main__":
    main()
