"""Audits at the tracker: challenges in announce answers, outcomes, bad copies to repair."""

from __future__ import annotations

from p2pshare.core.manifest import Manifest
from p2pshare.core.messages import AnnounceAck, FileDetail
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
)

NODES = {nid("owner"): 10**9, nid("h1"): 10**9, nid("h2"): 2 * 10**9, nid("spare"): 5 * 10**9}


async def setup(t: Running, holders: list[str]) -> Manifest:
    await announce(t.client, *(node(n, free=f) for n, f in NODES.items()))
    m = manifest(1)
    reg = registration(m, nid("owner"), holders, replica_target=len(holders))
    assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
    return m


async def detail(t: Running, m: Manifest) -> FileDetail:
    return FileDetail.model_validate_json((await t.client.get(f"/v1/files/{m.file_id}")).content)


async def audits_for(t: Running, node_id: str) -> AnnounceAck:
    r = await t.client.post("/v1/nodes/announce", json=body(node(node_id, free=NODES[node_id])))
    return AnnounceAck.model_validate_json(r.content)


async def test_a_passed_audit_is_recorded_and_shown(start_tracker: StartTracker) -> None:
    async with start_tracker() as t:
        m = await setup(t, [nid("owner"), nid("h1")])
        assert (await detail(t, m)).last_audit is None
        tasks = await t.state.audits.run_once()
        assert tasks, "two holders of one chunk: each can audit the other"
        task = tasks[0]
        assert task.target_id in {nid("owner"), nid("h1")} and len(task.nonce) == 64
        challenger = ({nid("owner"), nid("h1")} - {task.target_id}).pop()
        other = ({nid("owner"), nid("h1")} - {challenger}).pop()
        got = await audits_for(t, challenger)
        assert task in got.audits
        assert task not in (await audits_for(t, other)).audits
        assert_problem(
            await t.client.post(
                "/v1/audits",
                json={"node_id": other, "task_id": task.task_id, "outcome": "passed"},
            ),
            403,
            "forbidden",
        )
        r = await t.client.post(
            "/v1/audits",
            json={"node_id": challenger, "task_id": task.task_id, "outcome": "passed"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["recorded"] == "audit-passed"
        d = await detail(t, m)
        assert d.last_audit is not None
        assert sorted(h.node_id for h in d.chunks[0].holders) == ids("h1", "owner")
        assert_problem(
            await t.client.post(
                "/v1/audits",
                json={"node_id": challenger, "task_id": task.task_id, "outcome": "passed"},
            ),
            404,
            "not-found",
        )


async def test_a_failed_audit_drops_the_copy_and_triggers_repair(
    start_tracker: StartTracker,
) -> None:
    async with start_tracker() as t:
        m = await setup(t, [nid("owner"), nid("h1"), nid("h2")])
        tasks = await t.state.audits.run_once(limit=1)
        [task] = tasks
        challenger = ""
        for n in (nid("owner"), nid("h1"), nid("h2")):
            if task in (await audits_for(t, n)).audits:
                challenger = n
        r = await t.client.post(
            "/v1/audits",
            json={
                "node_id": challenger,
                "task_id": task.task_id,
                "outcome": "failed",
                "detail": "wrong proof",
            },
        )
        assert r.json()["recorded"] == "audit-failed"
        holders = [h.node_id for h in (await detail(t, m)).chunks[0].holders]
        assert task.target_id not in holders and len(holders) == 2
        [copy] = await t.state.repairs.run_once()
        assert (copy.chunk_id, copy.target) == (m.chunk_ids[0], nid("spare"))
        assert copy.source in holders


async def test_a_challenger_with_a_bad_copy_loses_its_own_replica(
    start_tracker: StartTracker,
) -> None:
    async with start_tracker() as t:
        m = await setup(t, [nid("owner"), nid("h1")])
        [task, *_] = await t.state.audits.run_once()
        challenger = ({nid("owner"), nid("h1")} - {task.target_id}).pop()
        await audits_for(t, challenger)
        r = await t.client.post(
            "/v1/audits",
            json={"node_id": challenger, "task_id": task.task_id, "outcome": "challenger-bad"},
        )
        assert r.status_code == 200
        holders = [h.node_id for h in (await detail(t, m)).chunks[0].holders]
        assert holders == [task.target_id]


async def test_a_chunk_with_one_holder_or_an_offline_one_is_not_audited(
    start_tracker: StartTracker,
) -> None:
    async with start_tracker() as t:
        await setup(t, [nid("owner")])
        assert await t.state.audits.run_once() == []
