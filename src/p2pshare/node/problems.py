"""Errors -> ``application/problem+json`` for the node's aiohttp server (one middleware)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from p2pshare.core.errors import P2PShareError
from p2pshare.core.messages import Problem
from p2pshare.core.problems import (
    PROBLEM_JSON,
    internal_problem,
    problem_for_error,
    problem_for_http,
    problem_for_validation,
)

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(problem: Problem) -> web.Response:
    """Return ``problem`` as an ``application/problem+json`` response."""
    return web.Response(
        body=problem.model_dump_json(exclude_none=True).encode(),
        status=problem.status,
        content_type=PROBLEM_JSON,
    )


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    """Return ``model`` as a JSON response."""
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error of a handler into a problem response."""
    try:
        return await handler(request)
    except P2PShareError as exc:
        return problem_response(problem_for_error(exc))
    except ValidationError as exc:
        errs = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        return problem_response(problem_for_validation(errs))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(problem_for_http(exc.status, exc.reason))
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return problem_response(internal_problem("node"))


async def read_model(request: web.Request, model: type[M]) -> M:
    """Return the request's JSON body parsed as ``model`` (ValidationError -> 422 problem)."""
    raw = await request.read()
    return model.model_validate_json(raw)
