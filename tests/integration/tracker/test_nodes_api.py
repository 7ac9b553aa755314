"""Announce and the node list: liveness in memory, rows written at once or behind."""

from __future__ import annotations

from sqlalchemy import select

from p2pshare.core.messages import MAX_PAGE_SIZE, AnnounceAck, NodeInfo, Page
from p2pshare.tracker.liveness import flush_once
from p2pshare.tracker.models import Node
from tests.integration.tracker.conftest import Running, StartTracker
from tests.integration.tracker.support import (
    announce,
    assert_problem,
    body,
    ids,
    nid,
    node,
    send_signed,
)


async def node_row(t: Running, node_id: str) -> Node | None:
    async with t.state.db.read() as s:
        return await s.scalar(select(Node).where(Node.node_id == node_id))


async def test_announce_answers_with_the_heartbeat_interval(start_tracker: StartTracker) -> None:
    async with start_tracker(heartbeat_interval=12.5) as t:
        r = await t.client.post("/v1/nodes/announce", json=body(node("a")))
        assert r.status_code == 200
        ack = AnnounceAck.model_validate_json(r.content)
        assert ack.heartbeat_interval == 12.5
        assert ack.offline_after == 37.5


async def test_new_node_is_written_at_once_and_listed_online(tracker: Running) -> None:
    await announce(tracker.client, node("a", free=500))
    row = await node_row(tracker, nid("a"))
    assert row is not None
    assert (row.name, row.free_bytes, row.status) == ("node a", 500, "online")
    page = Page[NodeInfo].model_validate_json(
        (await tracker.client.get("/v1/nodes?online=true")).content
    )
    assert [n.node_id for n in page.items] == [nid("a")]
    assert page.items[0].online is True
    assert page.items[0].last_seen == tracker.clock.now()


async def test_repeat_announce_is_written_behind(tracker: Running) -> None:
    await announce(tracker.client, node("a", free=500, used=0))
    await announce(tracker.client, node("a", free=300, used=200))
    row = await node_row(tracker, nid("a"))
    assert row is not None and row.free_bytes == 500  # not yet flushed
    listed = (await tracker.client.get("/v1/nodes?online=true")).json()["items"][0]
    assert listed["free_bytes"] == 300  # the API answers from memory
    assert await flush_once(tracker.state.liveness, tracker.state.repo)
    row = await node_row(tracker, nid("a"))
    assert row is not None
    assert (row.free_bytes, row.used_bytes, row.reserved_bytes) == (300, 200, 2 * 10**9 - 500)


async def test_changed_address_is_written_at_once(tracker: Running) -> None:
    await announce(tracker.client, node("a"))
    moved = node("a").model_copy(update={"address": "http://10.0.0.9:7071"})
    await announce(tracker.client, moved)
    row = await node_row(tracker, nid("a"))
    assert row is not None and row.address == "http://10.0.0.9:7071"


async def test_nodes_sorted_by_free_space_and_filtered(tracker: Running) -> None:
    await announce(
        tracker.client,
        node("a", free=10),
        node("b", free=30),
        node("c", free=20),
        node("d", free=30),
    )
    doc = (await tracker.client.get("/v1/nodes?online=true&min_free=15")).json()
    # most free first; b and d tie (30) and come in node id order
    assert [n["node_id"] for n in doc["items"]] == [*ids("b", "d"), nid("c")]
    assert doc["total"] == 3
    # the same from the table (all nodes, not only online)
    doc = (await tracker.client.get("/v1/nodes?min_free=15")).json()
    assert [n["node_id"] for n in doc["items"]] == [*ids("b", "d"), nid("c")]
    assert all(n["online"] for n in doc["items"])


async def test_nodes_pagination(tracker: Running) -> None:
    await announce(tracker.client, *(node(f"n{i}", free=100 - i) for i in range(5)))
    for online in ("true", None):
        q = "&online=true" if online else ""
        first = (await tracker.client.get(f"/v1/nodes?limit=2&offset=0{q}")).json()
        second = (await tracker.client.get(f"/v1/nodes?limit=2&offset=2{q}")).json()
        last = (await tracker.client.get(f"/v1/nodes?limit=2&offset=4{q}")).json()
        assert [n["node_id"] for n in first["items"]] == [nid("n0"), nid("n1")]
        assert [n["node_id"] for n in second["items"]] == [nid("n2"), nid("n3")]
        assert [n["node_id"] for n in last["items"]] == [nid("n4")]
        assert first["total"] == second["total"] == 5
        assert (first["limit"], second["offset"]) == (2, 2)


async def test_page_bounds_are_refused(tracker: Running) -> None:
    for query, field in [
        ("limit=0", "query.limit"),
        (f"limit={MAX_PAGE_SIZE + 1}", "query.limit"),
        ("offset=-1", "query.offset"),
        ("min_free=-5", "query.min_free"),
        ("online=maybe", "query.online"),
    ]:
        r = await tracker.client.get(f"/v1/nodes?{query}")
        doc = assert_problem(r, 422, "invalid-input", field)
        assert doc["errors"][0]["field"] == field
    r = await tracker.client.get(f"/v1/nodes?limit={MAX_PAGE_SIZE}")
    assert r.status_code == 200


async def test_announce_validation_names_the_field(tracker: Running) -> None:
    good = body(node("a"))
    for change, field in [
        ({"node_id": "a/../b"}, "body.node_id"),
        ({"address": "ftp://x"}, "body.address"),
        ({"free_bytes": -1}, "body.free_bytes"),
        ({"extra": 1}, "body.extra"),
    ]:
        # signed by "a", so a bad node_id is refused by validation, naming the field
        r = await send_signed(
            tracker.client, "POST", "/v1/nodes/announce", "a", json={**good, **change}
        )
        doc = assert_problem(r, 422, "invalid-input", field)
        assert any(e["field"] == field for e in doc["errors"])
    missing = {k: v for k, v in good.items() if k != "name"}
    r = await tracker.client.post("/v1/nodes/announce", json=missing)
    assert_problem(r, 422, "invalid-input", "body.name")
    r = await tracker.client.post(
        "/v1/nodes/announce", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(r, 422, "invalid-input", "body")
    assert await node_row(tracker, nid("a")) is None
