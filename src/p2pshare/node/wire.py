"""What this room's HTTP clients share, without aiohttp: answers turned into typed messages or
into the project's error tree.

The aiohttp calls (:mod:`p2pshare.node.http`), the chunk streams' worker threads
(:mod:`p2pshare.node.streams`) and the CLI's control client (:mod:`p2pshare.node.control_client`,
on the standard library's ``http.client``, so a CLI's start does not import aiohttp) all read
a problem answer with :func:`problem_error` and a JSON answer with :func:`parse_answer`; the two
blocking ones map what they meet on the wire with :func:`wire_error` and read an answer with
:func:`read_answer`.
"""

from __future__ import annotations

import http.client
import ssl
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from p2pshare.core.errors import P2PShareError, RemoteError, Unavailable
from p2pshare.core.messages import Problem
from p2pshare.core.problems import PROBLEM_JSON, error_from_problem

M = TypeVar("M", bound=BaseModel)

PROBLEM_LIMIT = 64 * 1024
"""Most bytes of an error answer read."""
MAX_JSON_RESPONSE = 128 * 2**20
"""Largest JSON answer read (a file detail of 2^20 chunks is about 100 MB)."""
READ_STEP = 1 << 16


def problem_error(
    status: int, content_type: str, body: bytes, reason: str | None, where: str
) -> P2PShareError:
    """Return the error a non-2xx answer stands for (our error tree for a problem document)."""
    if content_type.partition(";")[0].strip() in (PROBLEM_JSON, "application/json"):
        try:
            problem = Problem.model_validate_json(body)
        except ValidationError:
            pass
        else:
            return error_from_problem(problem, where=where)
    text = body.decode("utf-8", "replace").strip().splitlines()
    first = text[0][:200] if text else reason
    return RemoteError(f"{where}: HTTP {status}: {first}")


def parse_answer(raw: bytes, model: type[M] | TypeAdapter[Any], where: str) -> Any:
    """Return the JSON answer ``raw`` parsed as ``model``; :class:`RemoteError` if malformed."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_json(raw)
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RemoteError(f"{where}: malformed answer: {exc.errors()[0]['msg']}") from None


def wire_error(exc: BaseException, where: str) -> BaseException:
    """Return our error for what a blocking request met on the wire; other exceptions (ours,
    a ctrl-C) as they are."""
    if isinstance(exc, P2PShareError):
        return exc
    if isinstance(exc, TimeoutError):
        return Unavailable(f"{where}: no answer in time")
    if isinstance(exc, ssl.SSLError):
        return Unavailable(f"{where}: TLS failed ({exc.reason or exc})")
    if isinstance(exc, ConnectionRefusedError):
        return Unavailable(f"{where}: cannot connect ({exc.strerror})")
    if isinstance(exc, http.client.HTTPException):
        return RemoteError(f"{where}: broken response ({type(exc).__name__}: {exc})")
    if isinstance(exc, OSError):
        return Unavailable(f"{where}: connection lost ({exc.strerror or exc})")
    return exc


def read_answer(resp: http.client.HTTPResponse, where: str, limit: int = PROBLEM_LIMIT) -> bytes:
    """Return an answer's bytes (at most ``limit``: above is a :class:`RemoteError`), or raise
    the error a non-2xx answer stands for."""
    if resp.status >= 300:
        body = resp.read(PROBLEM_LIMIT)
        raise problem_error(
            resp.status, resp.getheader("Content-Type", ""), body, resp.reason, where
        )
    if resp.length is not None and resp.length > limit:
        raise RemoteError(f"{where}: an answer of {resp.length} bytes, above the {limit} limit")
    parts: list[bytes] = []
    total = 0
    while piece := resp.read(READ_STEP):
        total += len(piece)
        if total > limit:
            raise RemoteError(f"{where}: an answer above the {limit}-byte limit")
        parts.append(piece)
    return b"".join(parts)
