"""A minimal libtorrent seeder / downloader for the BitTorrent anchors of ``bench/anchors.py``.

usage: /usr/bin/python3 bench/bt_client.py seed TORRENT DATA_DIR [--port 6881] [--timeout 3600]
       /usr/bin/python3 bench/bt_client.py download TORRENT OUT_DIR [--port 6882] [--timeout 600]
       (both also take --parent-pipe: exit as soon as standard input closes)

Runs under the SYSTEM python3 (Debian's python3-libtorrent is built for it, not for the
project's virtualenv), so it imports nothing from the project. ``bench/anchors.py`` starts it
inside a network namespace of its own with ``ip netns exec``.

Both roles use ``lt.high_performance_seed()`` settings, listen on 127.0.0.1 only, and switch
off every peer source but the torrent's tracker: no DHT, local peer discovery, peer exchange
(the session is built without the default plugins and the torrent carries ``disable_pex``),
UPnP, NAT-PMP, or uTP (TCP only). ``allow_multiple_connections_per_ip`` is on: every peer of
the test swarm is 127.0.0.1, and libtorrent otherwise keeps one connection per IP address.

``seed`` hash-checks DATA_DIR/<name in the torrent>, then prints one JSON line
``{"event": "seeding", "seconds": S, "bytes": N}`` once the torrent is seeding and the tracker
has answered an announce, and seeds until it is killed, its standard input closes
(``--parent-pipe``), or ``--timeout`` seconds have passed.

``download`` fetches the torrent into OUT_DIR and prints one JSON line
``{"seconds": S, "bytes": N, "cpu_seconds": C}`` when every piece has been received and has
passed its SHA-1 check (the torrent is seeding), S counted from when the torrent was added to
the session, C the process's user+system CPU time so far; then it exits 0 (it does not stay
to seed, like aria2c with ``--seed-time=0``). Failures print one line ``bt_client: error:
...`` on stderr and exit 1; ``--timeout`` bounds the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

try:
    import libtorrent as lt
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("bt_client: error: libtorrent is not importable (install python3-libtorrent)")

POLL = 0.05
"""Seconds to wait for alerts in one turn of the loop (the resolution of the reported time)."""
REANNOUNCE_AFTER = 0.5
"""Seconds to wait before announcing again after a tracker error (e.g. the whitelist not read)."""


class Failure(Exception):
    """A one-line reason to stop with exit status 1."""


def settings(port: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the session settings: high_performance_seed(), tracker as the only peer source.

    ``extra`` (from ``--set NAME=VALUE``) is applied last.
    """
    pack: dict[str, Any] = dict(lt.high_performance_seed())
    pack.update(
        {
            "listen_interfaces": f"127.0.0.1:{port}",
            "outgoing_interfaces": "",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_incoming_utp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_tcp": True,
            "enable_outgoing_tcp": True,
            "allow_multiple_connections_per_ip": True,
            # plain BitTorrent on loopback: no obfuscation handshake to fall back from
            "out_enc_policy": int(lt.enc_policy.disabled),
            "in_enc_policy": int(lt.enc_policy.enabled),
            "user_agent": "p2pshare-bench-anchor",
            "alert_mask": int(
                lt.alert.category_t.status_notification
                | lt.alert.category_t.tracker_notification
                | lt.alert.category_t.error_notification
                | lt.alert.category_t.storage_notification
            ),
        }
    )
    pack.update(extra or {})
    return pack


def parse_setting(text: str) -> tuple[str, Any]:
    """Parse ``NAME=VALUE`` into a libtorrent setting; VALUE is an int, true/false or text."""
    name, sep, value = text.partition("=")
    if not sep or name not in lt.default_settings():
        raise argparse.ArgumentTypeError(f"not NAME=VALUE with a libtorrent setting: {text!r}")
    default = lt.default_settings()[name]
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise argparse.ArgumentTypeError(f"{name} takes true or false: {value!r}")
        return name, value.lower() in ("true", "1")
    if isinstance(default, int):
        try:
            return name, int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes an integer: {value!r}") from None
    return name, value


def open_session(port: int, extra: dict[str, Any] | None = None) -> lt.session:
    """Return a session with our settings and none of the default plugins (so no ut_pex)."""
    return lt.session(settings(port, extra), 0)


def add(session: lt.session, torrent: Path, save_path: Path) -> lt.torrent_handle:
    """Add ``torrent`` (saving into ``save_path``) with DHT, LSD and PEX off for it."""
    try:
        info = lt.torrent_info(str(torrent))
    except RuntimeError as exc:
        raise Failure(f"cannot read torrent {torrent}: {exc}") from None
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = str(save_path)
    params.flags = (
        lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd | lt.torrent_flags.disable_pex
    )
    return session.add_torrent(params)


def watch_parent(stop: threading.Event) -> None:
    """Set ``stop`` once standard input reaches end of file (the parent closed it or died)."""

    def wait() -> None:
        # os.read, not sys.stdin: a daemon thread blocked in a buffered reader makes the
        # interpreter abort at exit ("could not acquire lock ... at interpreter shutdown")
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        finally:
            stop.set()

    threading.Thread(target=wait, daemon=True).start()


def check_alerts(session: lt.session, handle: lt.torrent_handle) -> set[str]:
    """Handle pending alerts; return which of "announced" and "checked" happened.

    "announced": the tracker answered an announce; "checked": the hash check of the data
    already on disk ended. Raises :class:`Failure` on a storage or torrent error.
    """
    events: set[str] = set()
    for alert in session.pop_alerts():
        if isinstance(alert, lt.tracker_reply_alert):
            events.add("announced")
        elif isinstance(alert, lt.torrent_checked_alert):
            events.add("checked")
        elif isinstance(alert, lt.tracker_error_alert):
            # e.g. opentracker's whitelist not loaded yet: try again soon (bounded by --timeout)
            time.sleep(REANNOUNCE_AFTER)
            handle.force_reannounce()
        elif isinstance(alert, lt.file_error_alert | lt.torrent_error_alert):
            raise Failure(alert.message())
    return events


def is_complete(handle: lt.torrent_handle) -> bool:
    """True when every piece is present and verified: the torrent is seeding, not checking."""
    status = handle.status()
    return bool(status.is_seeding) and status.state == lt.torrent_status.states.seeding


def seed(args: argparse.Namespace, stop: threading.Event) -> None:
    """Seed until stopped; print one JSON line once seeding and announced."""
    start = time.monotonic()
    deadline = start + args.timeout
    session = open_session(args.port, dict(args.set))
    handle = add(session, args.torrent, args.dir)
    seen: set[str] = set()
    reported = False
    while not stop.is_set():
        if time.monotonic() > deadline:
            if not reported:
                raise Failure(f"not seeding and announced after {args.timeout:g} s")
            return
        session.wait_for_alert(int(POLL * 1000))
        seen |= check_alerts(session, handle)
        if reported or "checked" not in seen:
            continue
        if not handle.status().is_seeding:
            raise Failure(f"the data in {args.dir} does not match the torrent (hash check failed)")
        if "announced" in seen and is_complete(handle):
            size = handle.torrent_file().total_size()
            line = {"event": "seeding", "seconds": time.monotonic() - start, "bytes": size}
            print(json.dumps(line), flush=True)
            reported = True


def download(args: argparse.Namespace, stop: threading.Event) -> None:
    """Download; print one JSON line when every piece is in and checked, then return."""
    args.dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.timeout
    session = open_session(args.port, dict(args.set))
    start = time.monotonic()
    handle = add(session, args.torrent, args.dir)
    while not stop.is_set():
        if time.monotonic() > deadline:
            done = handle.status().total_wanted_done
            raise Failure(f"download not complete after {args.timeout:g} s ({done} bytes)")
        session.wait_for_alert(int(POLL * 1000))
        check_alerts(session, handle)
        if is_complete(handle):
            seconds = time.monotonic() - start
            size = handle.status().total_wanted_done
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime
            print(json.dumps({"seconds": seconds, "bytes": size, "cpu_seconds": cpu}), flush=True)
            return
    raise Failure("stopped before the download completed")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bt_client", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    for role, port, timeout, dir_name in (
        ("seed", 6881, 3600.0, "DATA_DIR"),
        ("download", 6882, 600.0, "OUT_DIR"),
    ):
        p = sub.add_parser(role)
        p.add_argument("torrent", type=Path, metavar="TORRENT")
        p.add_argument("dir", type=Path, metavar=dir_name)
        p.add_argument("--port", type=int, default=port, help="TCP port on 127.0.0.1")
        p.add_argument("--timeout", type=float, default=timeout, help="bound on the whole run (s)")
        p.add_argument("--parent-pipe", action="store_true", help="exit when stdin closes")
        p.add_argument(
            "--set",
            type=parse_setting,
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="override one libtorrent setting (repeatable)",
        )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.parent_pipe:
        watch_parent(stop)
    try:
        (seed if args.role == "seed" else download)(args, stop)
    except Failure as exc:
        print(f"bt_client: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
