"""Nodes that stop announcing go offline after 3 intervals; online holders are listed first."""

from __future__ import annotations

from sqlalchemy import select

from p2pshare.core.messages import LISTED_HOLDERS, MAX_REPLICAS, FileDetail
from p2pshare.tracker.liveness import flush_once
from p2pshare.tracker.models import Node
from tests.integration.tracker.conftest import StartTracker
from tests.integration.tracker.support import (
    announce,
    assert_problem,
    body,
    manifest,
    nid,
    node,
    registration,
    send_signed,
)

INTERVAL = 10.0


async def test_a_detail_lists_at_most_16_holders_of_a_chunk_online_first(
    start_tracker: StartTracker,
) -> None:
    """A popular chunk's holders are a sample of 16 (the detail stays bounded), online ones
    first; ``holders_total`` and the file's ``holders_online`` count them all."""
    names = [f"h{i:02}" for i in range(MAX_REPLICAS + 1)]  # the most one registration places
    async with start_tracker(heartbeat_interval=INTERVAL) as t:
        await announce(t.client, node("owner"), *(node(n) for n in names))
        m = manifest(2)
        reg = registration(m, nid("owner"), names, replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201

        holders_online: list[int] = []

        async def listed() -> list[tuple[list[tuple[str, bool]], int, int]]:
            r = await t.client.get(f"/v1/files/{m.file_id}")
            d = FileDetail.model_validate_json(r.content)
            holders_online.append(d.holders_online)  # all holders, listed or not
            return [
                ([(h.node_id, h.online) for h in c.holders], c.replicas_online, c.holders_total)
                for c in d.chunks
            ]

        everyone = {nid(n) for n in names}
        for holders, online, total in await listed():
            ids = {h for h, _ in holders}
            assert len(holders) == len(ids) == LISTED_HOLDERS < len(names) and ids <= everyone
            assert (online, total) == (len(names), len(names))

        # all but h00 and h01 fall silent: those two first, then offline ones, 16 in all
        for _ in range(4):
            t.clock.advance(INTERVAL)
            await announce(t.client, node("h00"), node("h01"))
        pair = sorted([(nid("h00"), True), (nid("h01"), True)])
        for holders, online, total in await listed():
            assert sorted(holders[:2]) == pair and (online, total) == (2, len(names))
            assert len(holders) == LISTED_HOLDERS and not any(up for _, up in holders[2:])
        assert holders_online == [len(names), 2]


async def test_silent_node_goes_offline_and_is_listed_last(start_tracker: StartTracker) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL) as t:
        await announce(t.client, node("owner"), node("a"), node("b"), node("c"))
        m = manifest(2)
        r = await t.client.post(
            "/v1/files", json=body(registration(m, nid("owner"), [nid("a"), nid("b"), nid("c")]))
        )
        assert r.status_code == 201
        # a falls silent; b and c keep announcing every interval
        for _ in range(3):
            t.clock.advance(INTERVAL)
            await announce(t.client, node("b"), node("c"))
        online = (await t.client.get("/v1/nodes?online=true")).json()["items"]
        assert nid("a") in {n["node_id"] for n in online}  # exactly 3 intervals: still online
        t.clock.advance(0.5)
        await announce(t.client, node("b"), node("c"))
        online = (await t.client.get("/v1/nodes?online=true")).json()["items"]
        assert {n["node_id"] for n in online} == {nid("b"), nid("c")}

        d = FileDetail.model_validate_json((await t.client.get(f"/v1/files/{m.file_id}")).content)
        for chunk in d.chunks:
            assert [(h.node_id, h.online) for h in chunk.holders] == [
                (nid("b"), True),
                (nid("c"), True),
                (nid("a"), False),
            ]
            assert chunk.replicas_online == 2
        assert [(s.node_id, s.online) for s in d.seeders] == [
            (nid("b"), True),
            (nid("c"), True),
            (nid("a"), False),
        ]

        # the flusher records the change in the table
        await flush_once(t.state.liveness, t.state.repo)
        async with t.state.db.read() as s:
            status = {
                r.node_id: r.status for r in await s.execute(select(Node.node_id, Node.status))
            }
        assert status == {
            nid("owner"): "offline",
            nid("a"): "offline",
            nid("b"): "online",
            nid("c"): "online",
        }
        offline = (await t.client.get("/v1/nodes?online=false")).json()["items"]
        assert {n["node_id"] for n in offline} == {nid("owner"), nid("a")}
        assert not any(n["online"] for n in offline)

        # a comes back
        await announce(t.client, node("a"))
        d = FileDetail.model_validate_json((await t.client.get(f"/v1/files/{m.file_id}")).content)
        assert all(c.replicas_online == 3 for c in d.chunks)


async def test_a_detail_shows_each_holder_as_of_its_last_announce(
    start_tracker: StartTracker,
) -> None:
    """The holder entries and seeders of a cached detail follow every announce."""
    async with start_tracker(heartbeat_interval=INTERVAL) as t:
        await announce(t.client, node("owner"), node("a", free=500))
        m = manifest(2)
        r = await t.client.post("/v1/files", json=body(registration(m, nid("owner"), [nid("a")])))
        assert r.status_code == 201

        async def seen() -> tuple[list[tuple[str, int, bool]], list[tuple[str | None, str]]]:
            raw = (await t.client.get(f"/v1/files/{m.file_id}")).content
            d = FileDetail.model_validate_json(raw)
            seeders = [(s.node_id, s.free_bytes, s.online) for s in d.seeders]
            holders = [(h.name, h.address) for c in d.chunks for h in c.holders]
            return seeders, holders

        before = await seen()
        assert before == await seen()  # a cached read answers the same
        assert (nid("a"), 500, True) in before[0]
        t.clock.advance(1)
        moved = node("a", free=200).model_copy(update={"name": "renamed", "address": "http://x:1"})
        await announce(t.client, moved)
        seeders, holders = await seen()
        assert (nid("a"), 200, True) in seeders
        assert ("renamed", "http://x:1") in holders and ("node a", before[1][0][1]) not in holders
        t.clock.advance(3 * INTERVAL + 1)
        seeders, _ = await seen()
        assert (nid("a"), 200, False) in seeders


async def test_a_node_that_says_it_stops_is_offline_at_once_until_it_announces(
    start_tracker: StartTracker,
) -> None:
    """A stopping node says so: downloaders are not sent to it for the three heartbeats
    its silence would take; its next announce brings it back."""
    async with start_tracker(heartbeat_interval=INTERVAL) as t:
        await announce(t.client, node("owner"), node("a"), node("b"))
        m = manifest(1)
        reg = registration(m, nid("owner"), ["a", "b"], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201

        async def online() -> tuple[set[str], list[tuple[str, bool]]]:
            page = (await t.client.get("/v1/nodes?online=true")).json()
            d = FileDetail.model_validate_json(
                (await t.client.get(f"/v1/files/{m.file_id}")).content
            )
            return {n["node_id"] for n in page["items"]}, [
                (h.node_id, h.online) for h in d.chunks[0].holders
            ]

        r = await t.client.post(f"/v1/nodes/{nid('a')}/offline")  # signed as a
        assert r.status_code == 200, r.text
        assert r.json()["recorded"] == "node-offline"
        assert await online() == (
            {nid("owner"), nid("b")},
            [(nid("b"), True), (nid("a"), False)],  # a listed last, as offline
        )
        await flush_once(t.state.liveness, t.state.repo)
        async with t.state.db.read() as s:
            status = await s.scalar(select(Node.status).where(Node.node_id == nid("a")))
        assert status == "offline"

        await announce(t.client, node("a"))
        assert (await online())[0] == {nid("owner"), nid("a"), nid("b")}

        # only the node itself may say so, and only a node the tracker has heard from
        r = await send_signed(t.client, "POST", f"/v1/nodes/{nid('a')}/offline", "b")
        assert_problem(r, 403, "forbidden", "")
        r = await t.client.post(f"/v1/nodes/{nid('never')}/offline")
        assert_problem(r, 404, "not-found", "has not announced")
        assert nid("a") in (await online())[0]
