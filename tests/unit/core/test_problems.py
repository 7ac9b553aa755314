"""Errors become problem+json bodies with stable types, and come back as the same errors."""

from __future__ import annotations

import json

from p2pshare.core.errors import (
    Conflict,
    Forbidden,
    InvalidId,
    InvalidManifest,
    NotFound,
    PayloadTooLarge,
    RemoteError,
    UnknownNode,
)
from p2pshare.core.messages import Problem
from p2pshare.core.problems import (
    MAX_FIELD_ERRORS,
    PROBLEM_JSON,
    error_from_problem,
    internal_problem,
    problem_for_error,
    problem_for_http,
    problem_for_validation,
)
from p2pshare.tracker.problems import problem_response


def test_errors_map_by_code_and_status() -> None:
    cases = [
        (InvalidId("file id must be hex"), "urn:p2pshare:invalid-id", 400),
        (InvalidManifest("root mismatch"), "urn:p2pshare:invalid-manifest", 400),
        (UnknownNode("holder x"), "urn:p2pshare:unknown-node", 400),
        (PayloadTooLarge("too big"), "urn:p2pshare:payload-too-large", 413),
        (Forbidden("not yours"), "urn:p2pshare:forbidden", 403),
        (NotFound("no file"), "urn:p2pshare:not-found", 404),
        (Conflict("taken"), "urn:p2pshare:conflict", 409),
    ]
    for error, type_, status in cases:
        p = problem_for_error(error)
        assert (p.type, p.status, p.detail) == (type_, status, error.detail)
        assert p.title and p.errors is None


def test_validation_names_each_field() -> None:
    p = problem_for_validation(
        [
            {"loc": ("body", "manifest", "name"), "msg": "Value error, bad name"},
            {"loc": ("query", "limit"), "msg": "Input should be less than or equal to 500"},
        ]
    )
    assert (p.type, p.status) == ("urn:p2pshare:invalid-input", 422)
    assert p.errors == [
        {"field": "body.manifest.name", "message": "Value error, bad name"},
        {"field": "query.limit", "message": "Input should be less than or equal to 500"},
    ]
    assert p.detail == "body.manifest.name: Value error, bad name (and 1 more)"


def test_validation_problem_lists_a_bounded_number_of_fields() -> None:
    errors = [{"loc": ("body", "held", i), "msg": "bad"} for i in range(1000)]
    p = problem_for_validation(errors)
    assert p.errors is not None and len(p.errors) == MAX_FIELD_ERRORS
    assert "(and 999 more)" in p.detail
    assert problem_for_validation([]).errors == [{"field": "body", "message": "invalid request"}]


def test_http_errors() -> None:
    assert problem_for_http(404, "Not Found").type == "urn:p2pshare:not-found"
    p = problem_for_http(405, None)
    assert (p.type, p.detail, p.title) == (
        "urn:p2pshare:http-405",
        "Method Not Allowed",
        "Method Not Allowed",
    )


def test_response_is_problem_json() -> None:
    r = problem_response(problem_for_error(NotFound("no file x")))
    assert r.status_code == 404
    assert r.media_type == PROBLEM_JSON
    doc = json.loads(bytes(r.body))
    assert doc == {
        "type": "urn:p2pshare:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "no file x",
    }


def test_a_problem_comes_back_as_the_same_error_class() -> None:
    for error in (InvalidId("bad id"), UnknownNode("who"), Conflict("taken"), NotFound("gone")):
        back = error_from_problem(problem_for_error(error), where="http://peer")
        assert type(back) is type(error)
        assert back.detail == f"http://peer: {error.detail}"


def test_an_unknown_problem_type_becomes_a_remote_error() -> None:
    for problem in (
        problem_for_http(405, "Method Not Allowed"),
        internal_problem("tracker"),
        Problem(type="https://elsewhere/x", title="t", status=418, detail="teapot"),
    ):
        back = error_from_problem(problem)
        assert isinstance(back, RemoteError)
        assert problem.type in back.detail and str(problem.status) in back.detail
    assert "log" in internal_problem("node").detail
