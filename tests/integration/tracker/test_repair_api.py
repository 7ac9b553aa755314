"""Repair at the tracker: silent holders past the grace, tasks in announce answers, reports."""

from __future__ import annotations

from p2pshare.core.messages import AnnounceAck, FileDetail
from p2pshare.tracker.repair import TRIED_FOR
from tests.integration.tracker.conftest import Running, StartTracker
from tests.integration.tracker.support import (
    announce,
    assert_problem,
    body,
    ids,
    manifest,
    nid,
    node,
    registration,
    send_signed,
)

INTERVAL = 10.0
GRACE = 30.0


async def announce_ack(t: Running, node_id: str, **kw: int) -> AnnounceAck:
    r = await t.client.post("/v1/nodes/announce", json=body(node(node_id, **kw)))
    assert r.status_code == 200, r.text
    return AnnounceAck.model_validate_json(r.content)


async def holders(t: Running, file_id: str) -> list[list[str]]:
    r = await t.client.get(f"/v1/files/{file_id}")
    d = FileDetail.model_validate_json(r.content)
    return [sorted(h.node_id for h in c.holders) for c in d.chunks]


async def pass_time(t: Running, seconds: float, *alive: str) -> None:
    """Let ``seconds`` go by on the fake clock while ``alive`` keep announcing."""
    step = INTERVAL / 2
    while seconds > 0:
        t.clock.advance(min(step, seconds))
        seconds -= step
        await announce(t.client, *(node(n, free=FREE[n]) for n in alive))


FREE = {nid("owner"): 10**9, nid("h1"): 10**9, nid("h2"): 2 * 10**9, nid("h3"): 5 * 10**9}


async def test_a_silent_holder_is_replaced_after_the_grace(start_tracker: StartTracker) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(2)
        reg = registration(m, nid("owner"), [nid("owner"), nid("h1")], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        desk = t.state.repairs
        assert await desk.run_once() == []

        # h1 falls silent; within the grace nothing is planned
        await pass_time(t, 3 * INTERVAL + GRACE - 5, nid("owner"), nid("h2"), nid("h3"))
        assert await desk.run_once() == []
        await pass_time(t, 10, nid("owner"), nid("h2"), nid("h3"))
        plan = await desk.run_once()
        assert sorted((a.chunk_id, a.source, a.target) for a in plan) == sorted(
            (cid, nid("owner"), nid("h3")) for cid in m.chunk_ids
        )
        assert await desk.run_once() == []  # in flight: never planned twice

        # the source gets its tasks with its next announce, and only it
        assert (await announce_ack(t, nid("h2"), free=FREE[nid("h2")])).repairs == []
        tasks = (await announce_ack(t, nid("owner"), free=FREE[nid("owner")])).repairs
        assert sorted(x.chunk_id for x in tasks) == sorted(m.chunk_ids)
        assert {(x.target_id, x.target_address) for x in tasks} == {(nid("h3"), node("h3").address)}
        assert (await announce_ack(t, nid("owner"), free=FREE[nid("owner")])).repairs == []
        first, second = sorted(tasks, key=lambda x: m.chunk_ids.index(x.chunk_id))

        r = await t.client.post(
            "/v1/repairs", json={"node_id": nid("owner"), "task_id": first.task_id, "ok": True}
        )
        assert r.status_code == 200, r.text
        assert r.json()["recorded"] == "chunk-repaired"
        assert await holders(t, m.file_id) == [ids("h1", "h3", "owner"), ids("h1", "owner")]

        # only the node given a task reports it; a task is reported once
        assert_problem(
            await t.client.post(
                "/v1/repairs", json={"node_id": nid("h2"), "task_id": second.task_id, "ok": True}
            ),
            403,
            "forbidden",
        )
        assert_problem(
            await t.client.post(
                "/v1/repairs", json={"node_id": nid("owner"), "task_id": first.task_id, "ok": True}
            ),
            404,
            "not-found",
        )
        assert_problem(
            await t.client.post(
                "/v1/repairs", json={"node_id": nid("owner"), "task_id": "zz", "ok": True}
            ),
            422,
            "invalid-input",
            "task_id",
        )

        # a failed task: the chunk is planned again, on another target
        r = await t.client.post(
            "/v1/repairs",
            json={
                "node_id": nid("owner"),
                "task_id": second.task_id,
                "ok": False,
                "detail": "full",
            },
        )
        assert r.json()["recorded"] == "repair-failed"
        [again] = await desk.run_once()
        assert (again.chunk_id, again.source, again.target) == (
            second.chunk_id,
            nid("owner"),
            nid("h2"),
        )
        assert await holders(t, m.file_id) == [ids("h1", "h3", "owner"), ids("h1", "owner")]


async def test_a_holder_back_within_the_grace_needs_no_repair(
    start_tracker: StartTracker,
) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(1)
        reg = registration(m, nid("owner"), [nid("owner"), nid("h1")], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        await pass_time(t, 3 * INTERVAL + GRACE - 5, nid("owner"), nid("h2"), nid("h3"))
        await announce(t.client, node("h1"))
        await pass_time(t, 20, nid("owner"), nid("h1"), nid("h2"), nid("h3"))
        assert await t.state.repairs.run_once() == []


async def test_a_lost_replica_is_repaired_at_once(start_tracker: StartTracker) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(2)
        reg = registration(m, nid("owner"), [nid("owner"), nid("h1")], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        r = await t.client.post(
            f"/v1/files/{m.file_id}/replicas", json={"node_id": nid("h1"), "lost": m.chunk_ids[:1]}
        )
        assert r.status_code == 200
        [a] = await t.state.repairs.run_once()
        assert (a.chunk_id, a.source, a.target) == (m.chunk_ids[0], nid("owner"), nid("h3"))


async def test_a_node_that_lost_a_chunk_is_not_its_repair_target_for_a_while(
    start_tracker: StartTracker,
) -> None:
    """h1 lost both chunks (one found by its integrity scan, one in a replica report): with
    no other node to copy to, nothing is planned until ``TRIED_FOR`` has passed."""
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        alive = (nid("owner"), nid("h1"))
        await announce(t.client, *(node(n, free=FREE[n]) for n in alive))
        m = manifest(2)
        reg = registration(m, nid("owner"), list(alive), replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        r = await t.client.post(
            f"/v1/nodes/{nid('h1')}/lost",
            json={"node_id": nid("h1"), "chunk_ids": m.chunk_ids[:1]},
        )
        assert r.status_code == 200, r.text
        r = await t.client.post(
            f"/v1/files/{m.file_id}/replicas", json={"node_id": nid("h1"), "lost": m.chunk_ids[1:]}
        )
        assert r.status_code == 200, r.text
        desk = t.state.repairs
        assert await desk.run_once() == []
        assert await holders(t, m.file_id) == [ids("owner"), ids("owner")]

        await pass_time(t, TRIED_FOR - 2 * INTERVAL, *alive)
        assert await desk.run_once() == []
        await pass_time(t, 2 * INTERVAL + 1, *alive)
        plan = await desk.run_once()
        assert sorted((a.chunk_id, a.source, a.target) for a in plan) == sorted(
            (cid, nid("owner"), nid("h1")) for cid in m.chunk_ids
        )


async def test_withdrawn_chunks_are_reclaimed_unless_another_file_needs_them(
    start_tracker: StartTracker,
) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(2)
        reg = registration(m, nid("owner"), [nid("owner"), nid("h1")], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        r = await t.client.delete(f"/v1/files/{m.file_id}", params={"node_id": nid("owner")})
        assert r.status_code == 200
        await t.state.repairs.run_once()
        told = {
            n: (await announce_ack(t, n, free=FREE[n])).reclaim for n in (nid("owner"), nid("h1"))
        }
        assert {n: sorted(ids) for n, ids in told.items()} == {
            nid("owner"): sorted(m.chunk_ids),
            nid("h1"): sorted(m.chunk_ids),
        }
        assert (await announce_ack(t, nid("h1"), free=FREE[nid("h1")])).reclaim == []  # told once

        # meanwhile the same bytes are registered again (by h2, with h1 acking a copy)
        again = manifest(2)
        reg2 = registration(again, nid("h2"), [nid("h2"), nid("h1")], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg2))).status_code == 201
        assert await holders(t, again.file_id) == [ids("h1", "h2", "owner")] * 2
        # ... and then h1 confirms it deleted them as told: the tracker believes it, and the
        # repair desk copies the chunks to another node
        r = await t.client.post(
            "/v1/reclaims", json={"node_id": nid("h1"), "chunk_ids": told[nid("h1")]}
        )
        assert r.status_code == 200 and r.json()["recorded"] == "chunks-reclaimed"
        assert await holders(t, again.file_id) == [ids("h2", "owner")] * 2
        r = await t.client.post(
            "/v1/reclaims", json={"node_id": nid("owner"), "chunk_ids": told[nid("owner")]}
        )
        assert await holders(t, again.file_id) == [[nid("h2")]] * 2
        plan = await t.state.repairs.run_once()
        assert sorted((a.chunk_id, a.source, a.target) for a in plan) == sorted(
            (c, nid("h2"), nid("h3")) for c in again.chunk_ids
        )
        assert (await announce_ack(t, nid("owner"), free=FREE[nid("owner")])).reclaim == []


async def test_a_draining_node_is_copied_away_from_and_never_copied_to(
    start_tracker: StartTracker,
) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(2)
        reg = registration(m, nid("owner"), [nid("owner"), nid("h1")], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        assert_problem(await t.client.post(f"/v1/nodes/{nid('ghost')}/drain"), 404, "not-found")
        assert_problem(  # signed, so the path's node id is what is refused
            await send_signed(t.client, "POST", "/v1/nodes/x!/drain", "h1"), 400, "invalid-input"
        )
        r = await t.client.post(f"/v1/nodes/{nid('h1')}/drain")
        assert r.status_code == 200, r.text
        listed = (await t.client.get("/v1/nodes", params={"online": "true"})).json()
        assert nid("h1") not in {n["node_id"] for n in listed["items"]}  # takes no new chunks
        assert listed["total"] == len(FREE) - 1
        assert r.json() == {
            "node_id": nid("h1"),
            "draining": True,
            "chunks_held": 2,
            "chunks_waiting": 2,
        }
        # h3 (the most room, holds nothing) leaves too: never a target
        assert (await t.client.post(f"/v1/nodes/{nid('h3')}/drain")).json()["chunks_waiting"] == 0
        plan = await t.state.repairs.run_once()
        assert len(plan) == 2
        assert all(a.target == nid("h2") and a.source in {nid("owner"), nid("h1")} for a in plan)
        tasks = {}
        for src in {a.source for a in plan}:
            for task in (await announce_ack(t, src, free=FREE.get(src, 10**12))).repairs:
                tasks[task.task_id] = src
        for task_id, src in tasks.items():
            r = await t.client.post(
                "/v1/repairs", json={"node_id": src, "task_id": task_id, "ok": True}
            )
            assert r.status_code == 200
        r = await t.client.get(f"/v1/nodes/{nid('h1')}/drain")
        assert r.json()["chunks_waiting"] == 0, (plan, tasks, await holders(t, m.file_id))
        assert await t.state.repairs.run_once() == []


async def test_a_task_whose_source_falls_silent_is_planned_again_from_another(
    start_tracker: StartTracker,
) -> None:
    """A repair task held by a source that then dies does not block the chunk until the
    task's deadline: once the source is past the grace, another holder is asked."""
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(1)
        reg = registration(m, nid("owner"), [nid("owner"), nid("h1"), nid("h2")], replica_target=3)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        desk = t.state.repairs
        # h1 falls silent: one copy short, planned from the owner or h2 to h3
        await pass_time(t, 3 * INTERVAL + GRACE + 5, nid("owner"), nid("h2"), nid("h3"))
        [first] = await desk.run_once()
        assert first.target == nid("h3") and first.source in {nid("owner"), nid("h2")}
        assert await desk.run_once() == []  # in flight
        # the source dies before it reports; after its grace the chunk is planned again
        others = [n for n in (nid("owner"), nid("h2")) if n != first.source]
        await pass_time(t, 3 * INTERVAL + GRACE + 5, nid("h3"), *others)
        failed = desk.failed
        [again] = await desk.run_once()
        assert desk.failed == failed + 1  # the dead source's task is dropped, not waited out
        assert (again.chunk_id, again.source) == (first.chunk_id, others[0])
        assert again.target == nid("h3")
