"""Errors <-> problem bodies (RFC 9457 ``application/problem+json``), for every HTTP layer.

A :class:`~p2pshare.core.errors.P2PShareError` becomes a :class:`~p2pshare.core.messages.Problem`
whose ``type`` is ``urn:p2pshare:<code>`` and whose ``status`` is the error's; a client turns the
problem back into the same class with :func:`error_from_problem`, so callers on both sides see
one error tree. Pure functions: the servers (FastAPI, aiohttp) and clients wrap them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from p2pshare.core import errors
from p2pshare.core.errors import InvalidInput, NotFound, P2PShareError
from p2pshare.core.messages import Problem

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:p2pshare:"
MAX_FIELD_ERRORS = 20
"""Most per-field entries one validation problem lists."""
VALIDATION_STATUS = 422
INTERNAL_ERROR = "internal-error"


def problem_type(code: str) -> str:
    """Return the problem ``type`` URI of an error code."""
    return TYPE_PREFIX + code


def title(status: int) -> str:
    """Return the HTTP reason phrase of ``status`` ("Error" for an unknown one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_for_error(exc: P2PShareError) -> Problem:
    """Return the problem body for one of our errors."""
    return Problem(
        type=problem_type(exc.code), title=title(exc.status), status=exc.status, detail=exc.detail
    )


def _field(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def problem_for_validation(errs: Sequence[Mapping[str, Any]]) -> Problem:
    """Return the 422 problem for validation ``errs`` (pydantic's error dicts).

    ``errors`` lists ``{"field", "message"}`` per problem (``field`` is the dotted path, e.g.
    ``body.manifest.name``); ``detail`` names the first.
    """
    entries = [
        {"field": _field(e.get("loc", ())), "message": str(e.get("msg", "invalid"))}
        for e in errs[:MAX_FIELD_ERRORS]
    ]
    if not entries:
        entries = [{"field": "body", "message": "invalid request"}]
    first = entries[0]
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return Problem(
        type=problem_type(InvalidInput.code),
        title=title(VALIDATION_STATUS),
        status=VALIDATION_STATUS,
        detail=f"{first['field']}: {first['message']}{more}",
        errors=entries,
    )


def problem_for_http(status: int, detail: str | None) -> Problem:
    """Return the problem for a plain HTTP error (unknown route 404, wrong method 405, ...)."""
    code = NotFound.code if status == 404 else f"http-{status}"
    return Problem(
        type=problem_type(code), title=title(status), status=status, detail=detail or title(status)
    )


def internal_problem(who: str) -> Problem:
    """Return the 500 problem for an unexpected failure; it reveals nothing of the cause."""
    return Problem(
        type=problem_type(INTERNAL_ERROR),
        title=title(500),
        status=500,
        detail=f"the {who} failed to answer; the error is in its log",
    )


def _codes() -> dict[str, type[P2PShareError]]:
    table: dict[str, type[P2PShareError]] = {}
    stack: list[type[P2PShareError]] = [P2PShareError]
    while stack:
        cls = stack.pop()
        table.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return table


def error_from_problem(problem: Problem, *, where: str = "") -> P2PShareError:
    """Return the error a received ``problem`` stands for (our class for a known type).

    An unknown type becomes :class:`~p2pshare.core.errors.RemoteError`. ``where`` (e.g. the
    peer's address) is prefixed to the detail when given.
    """
    code = problem.type.removeprefix(TYPE_PREFIX)
    cls = _codes().get(code) if problem.type.startswith(TYPE_PREFIX) else None
    detail = f"{where}: {problem.detail}" if where else problem.detail
    if cls is None or cls is P2PShareError:
        return errors.RemoteError(f"{detail} ({problem.type}, HTTP {problem.status})")
    return cls(detail)
