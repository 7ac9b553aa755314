"""Repair at the tracker: silent holders past the grace, tasks in announce answers, reports."""

from __future__ import annotations

from p2pshare.core.messages import AnnounceAck, FileDetail
from tests.integration.tracker.conftest import Running, StartTracker
from tests.integration.tracker.support import (
    announce,
    assert_problem,
    body,
    manifest,
    node,
    registration,
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


FREE = {"owner": 10**9, "h1": 10**9, "h2": 2 * 10**9, "h3": 5 * 10**9}


async def test_a_silent_holder_is_replaced_after_the_grace(start_tracker: StartTracker) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(2)
        reg = registration(m, "owner", ["owner", "h1"], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        desk = t.state.repairs
        assert await desk.run_once() == []

        # h1 falls silent; within the grace nothing is planned
        await pass_time(t, 3 * INTERVAL + GRACE - 5, "owner", "h2", "h3")
        assert await desk.run_once() == []
        await pass_time(t, 10, "owner", "h2", "h3")
        plan = await desk.run_once()
        assert sorted((a.chunk_id, a.source, a.target) for a in plan) == sorted(
            (cid, "owner", "h3") for cid in m.chunk_ids
        )
        assert await desk.run_once() == []  # in flight: never planned twice

        # the source gets its tasks with its next announce, and only it
        assert (await announce_ack(t, "h2", free=FREE["h2"])).repairs == []
        tasks = (await announce_ack(t, "owner", free=FREE["owner"])).repairs
        assert sorted(x.chunk_id for x in tasks) == sorted(m.chunk_ids)
        assert {(x.target_id, x.target_address) for x in tasks} == {("h3", node("h3").address)}
        assert (await announce_ack(t, "owner", free=FREE["owner"])).repairs == []
        first, second = sorted(tasks, key=lambda x: m.chunk_ids.index(x.chunk_id))

        r = await t.client.post(
            "/v1/repairs", json={"node_id": "owner", "task_id": first.task_id, "ok": True}
        )
        assert r.status_code == 200, r.text
        assert r.json()["recorded"] == "chunk-repaired"
        assert await holders(t, m.file_id) == [["h1", "h3", "owner"], ["h1", "owner"]]

        # only the node given a task reports it; a task is reported once
        assert_problem(
            await t.client.post(
                "/v1/repairs", json={"node_id": "h2", "task_id": second.task_id, "ok": True}
            ),
            403,
            "forbidden",
        )
        assert_problem(
            await t.client.post(
                "/v1/repairs", json={"node_id": "owner", "task_id": first.task_id, "ok": True}
            ),
            404,
            "not-found",
        )
        assert_problem(
            await t.client.post(
                "/v1/repairs", json={"node_id": "owner", "task_id": "zz", "ok": True}
            ),
            422,
            "invalid-input",
            "task_id",
        )

        # a failed task: the chunk is planned again, on another target
        r = await t.client.post(
            "/v1/repairs",
            json={"node_id": "owner", "task_id": second.task_id, "ok": False, "detail": "full"},
        )
        assert r.json()["recorded"] == "repair-failed"
        [again] = await desk.run_once()
        assert (again.chunk_id, again.source, again.target) == (second.chunk_id, "owner", "h2")
        assert await holders(t, m.file_id) == [["h1", "h3", "owner"], ["h1", "owner"]]


async def test_a_holder_back_within_the_grace_needs_no_repair(
    start_tracker: StartTracker,
) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(1)
        reg = registration(m, "owner", ["owner", "h1"], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        await pass_time(t, 3 * INTERVAL + GRACE - 5, "owner", "h2", "h3")
        await announce(t.client, node("h1"))
        await pass_time(t, 20, "owner", "h1", "h2", "h3")
        assert await t.state.repairs.run_once() == []


async def test_a_lost_replica_is_repaired_at_once(start_tracker: StartTracker) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(2)
        reg = registration(m, "owner", ["owner", "h1"], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        r = await t.client.post(
            f"/v1/files/{m.file_id}/replicas", json={"node_id": "h1", "lost": m.chunk_ids[:1]}
        )
        assert r.status_code == 200
        [a] = await t.state.repairs.run_once()
        assert (a.chunk_id, a.source, a.target) == (m.chunk_ids[0], "owner", "h3")


async def test_withdrawn_chunks_are_reclaimed_unless_another_file_needs_them(
    start_tracker: StartTracker,
) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(2)
        reg = registration(m, "owner", ["owner", "h1"], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        r = await t.client.delete(f"/v1/files/{m.file_id}", params={"node_id": "owner"})
        assert r.status_code == 200
        await t.state.repairs.run_once()
        told = {n: (await announce_ack(t, n, free=FREE[n])).reclaim for n in ("owner", "h1")}
        assert {n: sorted(ids) for n, ids in told.items()} == {
            "owner": sorted(m.chunk_ids),
            "h1": sorted(m.chunk_ids),
        }
        assert (await announce_ack(t, "h1", free=FREE["h1"])).reclaim == []  # told once

        # meanwhile the same bytes are registered again (by h2, with h1 acking a copy)
        again = manifest(2)
        reg2 = registration(again, "h2", ["h2", "h1"], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg2))).status_code == 201
        assert await holders(t, again.file_id) == [["h1", "h2", "owner"]] * 2
        # ... and then h1 confirms it deleted them as told: the tracker believes it, and the
        # repair desk copies the chunks to another node
        r = await t.client.post("/v1/reclaims", json={"node_id": "h1", "chunk_ids": told["h1"]})
        assert r.status_code == 200 and r.json()["recorded"] == "chunks-reclaimed"
        assert await holders(t, again.file_id) == [["h2", "owner"]] * 2
        r = await t.client.post(
            "/v1/reclaims", json={"node_id": "owner", "chunk_ids": told["owner"]}
        )
        assert await holders(t, again.file_id) == [["h2"]] * 2
        plan = await t.state.repairs.run_once()
        assert sorted((a.chunk_id, a.source, a.target) for a in plan) == sorted(
            (c, "h2", "h3") for c in again.chunk_ids
        )
        assert (await announce_ack(t, "owner", free=FREE["owner"])).reclaim == []


async def test_a_draining_node_is_copied_away_from_and_never_copied_to(
    start_tracker: StartTracker,
) -> None:
    async with start_tracker(heartbeat_interval=INTERVAL, repair_grace=GRACE) as t:
        await announce(t.client, *(node(n, free=f) for n, f in FREE.items()))
        m = manifest(2)
        reg = registration(m, "owner", ["owner", "h1"], replica_target=2)
        assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
        assert_problem(await t.client.post("/v1/nodes/ghost/drain"), 404, "not-found")
        assert_problem(await t.client.post("/v1/nodes/x!/drain"), 400, "invalid-input")
        r = await t.client.post("/v1/nodes/h1/drain")
        assert r.status_code == 200, r.text
        listed = (await t.client.get("/v1/nodes", params={"online": "true"})).json()
        assert "h1" not in {n["node_id"] for n in listed["items"]}  # takes no new chunks
        assert listed["total"] == len(FREE) - 1
        assert r.json() == {
            "node_id": "h1",
            "draining": True,
            "chunks_held": 2,
            "chunks_waiting": 2,
        }
        # h3 (the most room, holds nothing) leaves too: never a target
        assert (await t.client.post("/v1/nodes/h3/drain")).json()["chunks_waiting"] == 0
        plan = await t.state.repairs.run_once()
        assert len(plan) == 2
        assert all(a.target == "h2" and a.source in {"owner", "h1"} for a in plan)
        tasks = {}
        for src in {a.source for a in plan}:
            for task in (await announce_ack(t, src, free=FREE.get(src, 10**12))).repairs:
                tasks[task.task_id] = src
        for task_id, src in tasks.items():
            r = await t.client.post(
                "/v1/repairs", json={"node_id": src, "task_id": task_id, "ok": True}
            )
            assert r.status_code == 200
        r = await t.client.get("/v1/nodes/h1/drain")
        assert r.json()["chunks_waiting"] == 0, (plan, tasks, await holders(t, m.file_id))
        assert await t.state.repairs.run_once() == []
