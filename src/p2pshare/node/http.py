"""The one way this room makes HTTP calls: a pooled aiohttp session, timeouts, and errors mapped
into the project's error tree (callers never see ``aiohttp.ClientError`` or ``OSError``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, TypeAdapter, ValidationError

from p2pshare.core.errors import P2PShareError, RemoteError, Unavailable
from p2pshare.core.messages import Message, Problem
from p2pshare.core.problems import PROBLEM_JSON, error_from_problem

M = TypeVar("M", bound=BaseModel)

CONTROL_TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=5)
"""For small JSON requests: the whole exchange within 15 s."""
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
"""For chunk bodies: no total (a chunk may be large), but 30 s of silence ends it."""
MAX_JSON_RESPONSE = 128 * 2**20
"""Largest JSON answer read (a file detail of 2^20 chunks is about 100 MB)."""


def new_session(*, limit: int = 64, limit_per_host: int = 16) -> aiohttp.ClientSession:
    """Return the pooled session a process uses for every outgoing call."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host)
    return aiohttp.ClientSession(
        connector=connector, timeout=CONTROL_TIMEOUT, raise_for_status=False
    )


async def raise_for_problem(resp: aiohttp.ClientResponse, where: str) -> None:
    """Raise the error a non-2xx response stands for; return for a 2xx one."""
    if resp.status < 300:
        return
    body = await resp.content.read(64 * 1024)
    if resp.content_type in (PROBLEM_JSON, "application/json"):
        try:
            problem = Problem.model_validate_json(body)
        except ValidationError:
            pass
        else:
            raise error_from_problem(problem, where=where)
    text = body.decode("utf-8", "replace").strip().splitlines()
    first = text[0][:200] if text else resp.reason
    raise RemoteError(f"{where}: HTTP {resp.status}: {first}")


@asynccontextmanager
async def mapped_errors(where: str) -> AsyncIterator[None]:
    """Turn network failures inside the block into :class:`Unavailable` / :class:`RemoteError`."""
    try:
        yield
    except P2PShareError:
        raise
    except TimeoutError:
        raise Unavailable(f"{where}: no answer in time") from None
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
) -> M:
    """Send ``body`` as JSON and return the answer parsed as ``response_model``.

    ``where`` names the other side in error messages. Raises the error of a problem answer
    (our error tree), :class:`Unavailable` when the other side cannot be reached or is silent
    past the timeout, and :class:`RemoteError` for a malformed answer.
    """
    data = body.model_dump_json().encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else None
    async with (
        mapped_errors(where),
        session.request(
            method, url, data=data, params=params, headers=headers, timeout=client_timeout
        ) as resp,
    ):
        await raise_for_problem(resp, where)
        raw = await _read_limited(resp, MAX_JSON_RESPONSE)
    try:
        if isinstance(response_model, TypeAdapter):
            return response_model.validate_json(raw)
        return response_model.model_validate_json(raw)
    except ValidationError as exc:
        raise RemoteError(f"{where}: malformed answer: {exc.errors()[0]['msg']}") from None


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
