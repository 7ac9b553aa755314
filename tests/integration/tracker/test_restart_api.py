"""What was acked survives a restart of the app on the same database; liveness does not."""

from __future__ import annotations

from p2pshare.core.messages import FileDetail
from tests.integration.tracker.conftest import StartTracker
from tests.integration.tracker.support import announce, body, manifest, nid, node, registration


async def test_registration_survives_restart_and_nodes_start_offline(
    start_tracker: StartTracker,
) -> None:
    m = manifest(3)
    async with start_tracker() as t:
        await announce(t.client, node("owner"), node("h1"), node("h2"))
        r = await t.client.post(
            "/v1/files", json=body(registration(m, nid("owner"), [nid("h1"), nid("h2")]))
        )
        assert r.status_code == 201
        await announce(t.client, node("h1", free=123))  # written behind, flushed at shutdown
    async with start_tracker() as t:
        d = FileDetail.model_validate_json((await t.client.get(f"/v1/files/{m.file_id}")).content)
        assert d.manifest == m
        assert all([h.node_id for h in c.holders] == [nid("h1"), nid("h2")] for c in d.chunks)
        assert all(not h.online for c in d.chunks for h in c.holders)
        nodes = {n["node_id"]: n for n in (await t.client.get("/v1/nodes")).json()["items"]}
        assert nodes[nid("h1")]["free_bytes"] == 123
        assert not any(n["online"] for n in nodes.values())
        assert (await t.client.get("/v1/nodes?online=true")).json()["total"] == 0
        await announce(t.client, node("h2"))
        d = FileDetail.model_validate_json((await t.client.get(f"/v1/files/{m.file_id}")).content)
        assert [(h.node_id, h.online) for h in d.chunks[0].holders] == [
            (nid("h2"), True),
            (nid("h1"), False),
        ]
