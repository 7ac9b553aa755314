"""Errors -> ``application/problem+json`` (RFC 9457) for FastAPI, mapped by core.problems.

Each :class:`~p2pshare.core.errors.P2PShareError` becomes a :class:`~p2pshare.core.messages.Problem`
whose ``type`` is ``urn:p2pshare:<code>`` and whose status is the error's ``status``; a client
maps the type back to the same class. Request validation failures are ``invalid-input`` with
status 422 and one ``{"field", "message"}`` entry per problem (``field`` is the dotted path,
e.g. ``body.manifest.name`` or ``query.limit``). HTTP errors raised by the framework (unknown
route, wrong method) keep their status with type ``urn:p2pshare:http-<status>``, except 404,
which is ``not-found``. Anything else is a 500 ``internal-error`` whose detail reveals nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from p2pshare.core.errors import P2PShareError
from p2pshare.core.messages import Problem
from p2pshare.core.problems import (
    PROBLEM_JSON,
    internal_problem,
    problem_for_error,
    problem_for_http,
    problem_for_validation,
)

__all__ = ["PROBLEM_JSON", "install", "problem_for_error", "problem_response"]

log = logging.getLogger(__name__)


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> Response:
    """Return ``problem`` as an ``application/problem+json`` response."""
    return Response(
        problem.model_dump_json(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


async def _on_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, P2PShareError)
    return problem_response(problem_for_error(exc))


async def _on_validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(problem_for_validation(exc.errors()))


async def _on_http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(problem_for_http(exc.status_code, detail), headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(internal_problem("tracker"))


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""
    app.add_exception_handler(P2PShareError, _on_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
