"""The one way this room makes HTTP calls: a pooled aiohttp session, timeouts, and errors mapped
into the project's error tree (callers never see ``aiohttp.ClientError`` or ``OSError``).

Addresses may carry a pin: ``https://HOST:PORT#FINGERPRINT`` (the SHA-256 of the other side's
certificate, hex). :func:`url_of` keeps the pin at the end of a URL built on an address and
:func:`prepare` turns it into the TLS check of the request (``aiohttp.Fingerprint``): a
certificate that does not match is refused before a byte of the request is sent. An https URL
without a pin is refused. :func:`prepare` also signs the request when given a signer
(:mod:`p2pshare.security.signing`).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import TypeAdapter
from yarl import URL

from p2pshare.core.admission import CLIENT_KEEPALIVE
from p2pshare.core.errors import InvalidInput, P2PShareError, RemoteError, Unavailable
from p2pshare.core.messages import Message
from p2pshare.node.wire import MAX_JSON_RESPONSE, PROBLEM_LIMIT, M, parse_answer, problem_error
from p2pshare.security.signing import Signer, body_sha256, sign_request

CONTROL_TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=5)
"""For small JSON requests: the whole exchange within 15 s."""
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
"""For chunk bodies: no total (a chunk may be large), but 30 s of silence ends it."""
PIN_MISMATCH = (
    "its TLS certificate does not match the pinned fingerprint (not the node it claims to be): "
    "refused"
)


_PIN_RE = re.compile(r"[0-9a-f]{64}")


def url_of(address: str, path: str) -> str:
    """Return ``path`` on ``address``, keeping the address's pin (``#...``) at the end."""
    base, sep, pin = address.partition("#")
    return f"{base.rstrip('/')}{path}{sep}{pin}"


def address_pin(address: str) -> str | None:
    """Return the certificate fingerprint an address carries after ``#``, if any."""
    _, sep, pin = address.partition("#")
    return pin if sep else None


@functools.lru_cache(maxsize=4096)
def _pinned(pin: str) -> aiohttp.Fingerprint:
    """Return the TLS check of ``pin``: one object per pin, so the session's pool keeps
    reusing the connections it opened with it (the pool keys connections by it)."""
    return aiohttp.Fingerprint(bytes.fromhex(pin))


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready for ``session.request``: its URL (no pin), TLS check and headers."""

    url: URL
    ssl: aiohttp.Fingerprint | bool
    headers: dict[str, str]


def prepare(
    method: str,
    url: str,
    *,
    params: Mapping[str, Any] | None = None,
    body_hash: str | None = None,
    signer: Signer | None = None,
    headers: Mapping[str, str] | None = None,
) -> Prepared:
    """Return the URL, TLS pin and headers of a request to ``url``.

    ``body_hash`` is the hex SHA-256 of the body a signature covers (of no bytes when None).
    Raises :class:`InvalidInput` for an https URL without a well-formed pin.
    """
    base, sep, pin = url.partition("#")
    target = URL(base)
    if params:
        target = target.update_query({k: str(v) for k, v in params.items()})
    tls: aiohttp.Fingerprint | bool = True
    if target.scheme == "https":
        if not sep or _PIN_RE.fullmatch(pin) is None:
            raise InvalidInput(
                f"{base}: an https address needs the certificate fingerprint after '#' "
                "(64 hex characters, as the tracker lists it)"
            )
        tls = _pinned(pin)
    elif sep:
        raise InvalidInput(f"{base}: only an https address carries a certificate fingerprint")
    all_headers = dict(headers or {})
    if signer is not None:
        digest = body_hash or body_sha256(b"")
        all_headers |= sign_request(signer, method, target.raw_path_qs, digest, now=time.time())
    return Prepared(target, tls, all_headers)


def new_session(*, limit: int = 64, limit_per_host: int = 16) -> aiohttp.ClientSession:
    """Return the pooled session a process uses for every outgoing call."""
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=limit_per_host, keepalive_timeout=CLIENT_KEEPALIVE
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=CONTROL_TIMEOUT, raise_for_status=False
    )


async def raise_for_problem(resp: aiohttp.ClientResponse, where: str) -> None:
    """Raise the error a non-2xx response stands for; return for a 2xx one."""
    if resp.status < 300:
        return
    body = await resp.content.read(PROBLEM_LIMIT)
    raise problem_error(resp.status, resp.content_type, body, resp.reason, where)


@asynccontextmanager
async def mapped_errors(where: str) -> AsyncIterator[None]:
    """Turn network failures inside the block into :class:`Unavailable` / :class:`RemoteError`."""
    try:
        yield
    except P2PShareError:
        raise
    except TimeoutError:
        raise Unavailable(f"{where}: no answer in time") from None
    except aiohttp.ServerFingerprintMismatch:
        raise Unavailable(f"{where}: {PIN_MISMATCH}") from None
    except aiohttp.ClientConnectorCertificateError as exc:
        raise Unavailable(f"{where}: TLS certificate refused ({exc.certificate_error})") from None
    except aiohttp.ClientConnectorError as exc:
        raise Unavailable(f"{where}: cannot connect ({exc.os_error.strerror or exc})") from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise Unavailable(f"{where}: connection lost ({exc})") from None
    except aiohttp.ClientPayloadError as exc:
        raise RemoteError(f"{where}: broken response body ({exc})") from None
    except aiohttp.ClientError as exc:
        raise RemoteError(f"{where}: {exc}") from None


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    response_model: type[M] | TypeAdapter[Any],
    *,
    body: Message | None = None,
    params: Mapping[str, Any] | None = None,
    where: str,
    client_timeout: aiohttp.ClientTimeout = CONTROL_TIMEOUT,
    signer: Signer | None = None,
) -> M:
    """Send ``body`` as JSON and return the answer parsed as ``response_model``.

    ``where`` names the other side in error messages; ``signer`` signs the request. Raises the
    error of a problem answer (our error tree), :class:`Unavailable` when the other side cannot
    be reached or is silent past the timeout, and :class:`RemoteError` for a malformed answer.
    """
    data = body.model_dump_json().encode() if body is not None else None
    req = prepare(
        method,
        url,
        params=params,
        body_hash=body_sha256(data) if data is not None else None,
        signer=signer,
        headers={"Content-Type": "application/json"} if data is not None else None,
    )
    async with (
        mapped_errors(where),
        session.request(
            method,
            req.url,
            data=data,
            headers=req.headers,
            ssl=req.ssl,
            timeout=client_timeout,
        ) as resp,
    ):
        await raise_for_problem(resp, where)
        raw = await _read_limited(resp, MAX_JSON_RESPONSE)
    return parse_answer(raw, response_model, where)


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise RemoteError(f"answer of {resp.content_length} bytes is above the {limit} limit")
    parts: list[bytes] = []
    total = 0
    async for piece in resp.content.iter_chunked(1 << 16):
        total += len(piece)
        if total > limit:
            raise RemoteError(f"answer is above the {limit}-byte limit")
        parts.append(piece)
    return b"".join(parts)
