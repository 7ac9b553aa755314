"""Request bodies above the limit are refused with 413, declared or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.tracker.conftest import StartTracker
from tests.integration.tracker.support import assert_problem, body, node

LIMIT = 4096


async def test_declared_oversized_body_is_refused(start_tracker: StartTracker) -> None:
    async with start_tracker(max_body_size=LIMIT) as t:
        big = b'{"node_id": "' + b"a" * LIMIT + b'"}'
        r = await t.client.post(
            "/v1/nodes/announce", content=big, headers={"content-type": "application/json"}
        )
        assert_problem(r, 413, "payload-too-large", "4.0 KiB")
        assert (await t.client.get("/v1/nodes")).json()["total"] == 0
        ok = await t.client.post("/v1/nodes/announce", json=body(node("a")))
        assert ok.status_code == 200


async def _oversized() -> AsyncIterator[bytes]:
    """A JSON body of about 100 KiB, streamed without a Content-Length."""
    yield b'{"node_id": "'
    for _ in range(100):
        yield b"a" * 1024
    yield b'"}'


@pytest.mark.parametrize("path", ["/v1/files", "/v1/nodes/announce"])
async def test_streamed_oversized_body_is_cut_off(start_tracker: StartTracker, path: str) -> None:
    """Also for announces, which the fast lane reads itself."""
    async with start_tracker(max_body_size=LIMIT) as t:
        r = await t.client.post(
            path, content=_oversized(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in r.request.headers
        assert_problem(r, 413, "payload-too-large")
        assert (await t.client.get("/v1/files")).json()["total"] == 0
        assert t.state.liveness.get(node("a").node_id) is None
