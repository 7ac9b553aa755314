"""Leechers, replica reports, download reports and stats."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from p2pshare.core.manifest import Manifest
from p2pshare.core.messages import FileDetail, NewHolders, Stats
from p2pshare.tracker import repository
from p2pshare.tracker.models import Event, Leecher, Replica
from tests.integration.tracker.conftest import Running
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


async def registered(t: Running, n_chunks: int = 3, *, target: int = 1) -> Manifest:
    await announce(t.client, node("owner"), node("h1"), node("leech"))
    m = manifest(n_chunks)
    reg = registration(m, nid("owner"), [nid("h1")], replica_target=target)
    assert (await t.client.post("/v1/files", json=body(reg))).status_code == 201
    return m


async def detail(t: Running, m: Manifest) -> FileDetail:
    r = await t.client.get(f"/v1/files/{m.file_id}")
    assert r.status_code == 200, r.text
    return FileDetail.model_validate_json(r.content)


async def test_leecher_start_and_stop(tracker: Running) -> None:
    m = await registered(tracker)
    url = f"/v1/files/{m.file_id}/leechers"
    r = await tracker.client.post(url, json={"node_id": nid("leech"), "state": "started"})
    assert r.status_code == 200
    assert r.json() == {"recorded": "leecher-started", "at": "2030-01-01T00:00:00Z"}
    assert [n.node_id for n in (await detail(tracker, m)).leechers] == [nid("leech")]
    r = await tracker.client.post(url, json={"node_id": nid("leech"), "state": "stopped"})
    assert r.json()["recorded"] == "leecher-stopped"
    assert (await detail(tracker, m)).leechers == []
    async with tracker.state.db.read() as s:
        row = await s.scalar(select(Leecher))
    assert row is not None and row.active is False and row.stopped is not None


async def test_leecher_refusals(tracker: Running) -> None:
    m = await registered(tracker)
    url = f"/v1/files/{m.file_id}/leechers"
    assert_problem(
        await tracker.client.post(url, json={"node_id": nid("ghost"), "state": "started"}),
        400,
        "unknown-node",
        nid("ghost"),
    )
    assert_problem(
        await tracker.client.post(url, json={"node_id": nid("leech"), "state": "paused"}),
        422,
        "invalid-input",
        "body.state",
    )
    assert_problem(
        await tracker.client.post(
            "/v1/files/xyz/leechers", json={"node_id": nid("leech"), "state": "started"}
        ),
        400,
        "invalid-id",
    )
    assert_problem(
        await tracker.client.post(
            f"/v1/files/{'ef' * 32}/leechers", json={"node_id": nid("leech"), "state": "started"}
        ),
        404,
        "not-found",
    )


async def test_replica_reports_make_holders_and_seeders(tracker: Running) -> None:
    m = await registered(tracker)
    url = f"/v1/files/{m.file_id}/replicas"
    r = await tracker.client.post(url, json={"node_id": nid("leech"), "held": m.chunk_ids[:2]})
    assert r.status_code == 200
    assert r.json()["recorded"] == "replicas-reported"
    d = await detail(tracker, m)
    assert [[h.node_id for h in c.holders] for c in d.chunks] == [
        ids("h1", "leech"),
        ids("h1", "leech"),
        [nid("h1")],
    ]
    assert [c.replicas_online for c in d.chunks] == [2, 2, 1]
    assert [s.node_id for s in d.seeders] == [nid("h1")]
    await tracker.client.post(url, json={"node_id": nid("leech"), "held": m.chunk_ids[2:]})
    assert sorted(s.node_id for s in (await detail(tracker, m)).seeders) == ids("h1", "leech")
    r = await tracker.client.post(url, json={"node_id": nid("h1"), "lost": m.chunk_ids[:1]})
    assert r.status_code == 200
    d = await detail(tracker, m)
    assert [h.node_id for h in d.chunks[0].holders] == [nid("leech")]
    assert [s.node_id for s in d.seeders] == [nid("leech")]
    async with tracker.state.db.read() as s:
        rows = (await s.execute(select(Replica.node_id, Replica.verified_ok))).all()
    assert len(rows) == 5 and all(ok for _, ok in rows)


async def test_a_bad_replica_is_no_longer_listed_until_its_holder_reports_it_again(
    tracker: Running,
) -> None:
    m = await registered(tracker)
    url = f"/v1/files/{m.file_id}/replicas"
    await tracker.client.post(url, json={"node_id": nid("leech"), "held": m.chunk_ids})
    bad = {"node_id": nid("h1"), "chunk_id": m.chunk_ids[1]}
    r = await tracker.client.post(url, json={"node_id": nid("leech"), "bad": [bad]})
    assert r.status_code == 200, r.text
    d = await detail(tracker, m)
    assert [[h.node_id for h in c.holders] for c in d.chunks] == [
        ids("h1", "leech"),
        [nid("leech")],
        ids("h1", "leech"),
    ]
    assert [c.replicas_online for c in d.chunks] == [2, 1, 2]
    assert [s.node_id for s in d.seeders] == [nid("leech")]
    stats = Stats.model_validate_json((await tracker.client.get("/v1/stats")).content)
    assert stats.chunks == 3
    async with tracker.state.db.read() as s:
        details = (await s.scalars(select(Event.detail).where(Event.node_id == nid("leech")))).all()
    assert any(f"bad {m.chunk_ids[1]} on {nid('h1')}" in d for d in details)
    # the holder re-verified its copy (integrity scan) and reports it held again
    await tracker.client.post(url, json={"node_id": nid("h1"), "held": m.chunk_ids[1:2]})
    d = await detail(tracker, m)
    assert [h.node_id for h in d.chunks[1].holders] == ids("h1", "leech")


async def test_a_bad_replica_report_for_a_chunk_of_another_file_is_refused(
    tracker: Running,
) -> None:
    m = await registered(tracker)
    other = manifest(1, seed=99)
    bad = {"node_id": nid("h1"), "chunk_id": other.chunk_ids[0]}
    assert_problem(
        await tracker.client.post(
            f"/v1/files/{m.file_id}/replicas", json={"node_id": nid("leech"), "bad": [bad]}
        ),
        400,
        "invalid-input",
        "not part of file",
    )
    assert all(len(c.holders) == 1 for c in (await detail(tracker, m)).chunks)


async def test_replica_report_refusals(tracker: Running) -> None:
    m = await registered(tracker)
    other = manifest(1, seed=99)
    url = f"/v1/files/{m.file_id}/replicas"
    assert_problem(
        await tracker.client.post(url, json={"node_id": nid("leech"), "held": other.chunk_ids}),
        400,
        "invalid-input",
        "not part of file",
    )
    assert_problem(
        await tracker.client.post(
            url, json={"node_id": nid("leech"), "held": m.chunk_ids[:1], "lost": m.chunk_ids[:1]}
        ),
        400,
        "invalid-input",
        "both held and lost",
    )
    assert_problem(
        await tracker.client.post(url, json={"node_id": nid("leech"), "held": ["nothex"]}),
        422,
        "invalid-input",
        "body.held.0",
    )
    assert_problem(
        await tracker.client.post(url, json={"node_id": nid("ghost"), "held": m.chunk_ids}),
        400,
        "unknown-node",
    )
    async with tracker.state.db.read() as s:
        holders = (await s.scalars(select(Replica.node_id).distinct())).all()
    assert holders == [nid("h1")]


async def new_holders(t: Running, m: Manifest, since: object) -> NewHolders:
    r = await t.client.get(f"/v1/files/{m.file_id}/holders", params={"since": str(since)})
    assert r.status_code == 200, r.text
    return NewHolders.model_validate_json(r.content)


def pairs(new: NewHolders) -> list[tuple[str, str, bool]]:
    return [(n.chunk_id, n.holder.node_id, n.holder.online) for n in new.holders]


async def test_new_holders_are_those_written_since_a_detail_or_the_answer_before(
    tracker: Running,
) -> None:
    """A download's look for new sources: only the replicas written since its detail's
    ``as_of`` (a few seconds before it, so nothing written during a read is missed)."""
    m = await registered(tracker)
    url = f"/v1/files/{m.file_id}/replicas"
    tracker.clock.advance(60)
    d = await detail(tracker, m)
    assert d.as_of == tracker.clock.now() - repository.HOLDERS_OVERLAP
    empty = await new_holders(tracker, m, d.as_of.isoformat())
    assert (empty.holders, empty.as_of) == ([], d.as_of)  # h1's replicas are older
    tracker.clock.advance(1)
    await tracker.client.post(url, json={"node_id": nid("leech"), "held": m.chunk_ids[:2]})
    new = await new_holders(tracker, m, d.as_of.isoformat())
    assert pairs(new) == [(c, nid("leech"), True) for c in m.chunk_ids[:2]]
    assert new.holders[0].holder.address == node("leech").address
    # within the overlap the same replicas come again (the download ignores what it knows)
    assert pairs(await new_holders(tracker, m, new.as_of.isoformat())) == pairs(new)
    tracker.clock.advance(60)
    await announce(tracker.client, node("leech"))  # still online (who is, is as of now)
    later = await new_holders(tracker, m, new.as_of.isoformat())
    assert pairs(later) == pairs(new)
    assert (await new_holders(tracker, m, later.as_of.isoformat())).holders == []
    # a replica reported bad is not listed
    await announce(tracker.client, node("second"))
    tracker.clock.advance(1)
    await tracker.client.post(url, json={"node_id": nid("second"), "held": m.chunk_ids[:2]})
    bad = {"node_id": nid("second"), "chunk_id": m.chunk_ids[1]}
    await tracker.client.post(url, json={"node_id": nid("leech"), "bad": [bad]})
    assert pairs(await new_holders(tracker, m, later.as_of.isoformat())) == [
        (m.chunk_ids[0], nid("second"), True)
    ]


async def test_new_holders_come_in_bounded_answers_that_move_on(
    tracker: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More replicas than an answer lists: the next answer goes on from the first one left
    out; replicas of one instant beyond the bound are skipped, or no answer would move on."""
    monkeypatch.setattr(repository, "NEW_HOLDERS_LIMIT", 1)
    m = await registered(tracker)
    url = f"/v1/files/{m.file_id}/replicas"
    tracker.clock.advance(60)
    since = (await detail(tracker, m)).as_of
    tracker.clock.advance(1)
    await tracker.client.post(url, json={"node_id": nid("leech"), "held": m.chunk_ids[:1]})
    await announce(tracker.client, node("second"))
    tracker.clock.advance(1)
    await tracker.client.post(url, json={"node_id": nid("second"), "held": m.chunk_ids[1:2]})
    first = await new_holders(tracker, m, since.isoformat())
    assert pairs(first) == [(m.chunk_ids[0], nid("leech"), True)]
    second = await new_holders(tracker, m, first.as_of.isoformat())
    assert pairs(second) == [(m.chunk_ids[1], nid("second"), True)]
    # three replicas written at one instant, one answer of one: the other two are skipped
    tracker.clock.advance(60)
    since = (await detail(tracker, m)).as_of
    tracker.clock.advance(1)
    await tracker.client.post(url, json={"node_id": nid("second"), "held": m.chunk_ids})
    one = await new_holders(tracker, m, since.isoformat())
    assert len(one.holders) == 1
    assert one.as_of == tracker.clock.now() + timedelta(microseconds=1)
    assert (await new_holders(tracker, m, one.as_of.isoformat())).holders == []


async def test_new_holders_refusals(tracker: Running) -> None:
    m = await registered(tracker)
    since = (await detail(tracker, m)).as_of
    assert since is not None
    url = f"/v1/files/{m.file_id}/holders"
    assert_problem(
        await tracker.client.get(url, params={"since": "2030-01-01T00:00:00"}),
        422,
        "invalid-input",
        "query.since",
    )
    assert_problem(await tracker.client.get(url), 422, "invalid-input", "query.since")
    assert_problem(
        await tracker.client.get(url, params={"since": "yesterday"}), 422, "invalid-input"
    )
    assert_problem(
        await tracker.client.get("/v1/files/xyz/holders", params={"since": since.isoformat()}),
        400,
        "invalid-id",
    )
    assert_problem(
        await tracker.client.get(
            f"/v1/files/{'ef' * 32}/holders", params={"since": since.isoformat()}
        ),
        404,
        "not-found",
    )
    await tracker.client.delete(f"/v1/files/{m.file_id}", params={"node_id": nid("owner")})
    assert_problem(
        await tracker.client.get(url, params={"since": since.isoformat()}),
        404,
        "not-found",
        "withdrawn",
    )


async def test_download_reports(tracker: Running) -> None:
    m = await registered(tracker)
    await tracker.client.post(
        f"/v1/files/{m.file_id}/leechers", json={"node_id": nid("leech"), "state": "started"}
    )
    url = f"/v1/files/{m.file_id}/downloads"
    r = await tracker.client.post(
        url, json={"node_id": nid("h1"), "role": "holder", "bytes": m.size, "peer": nid("leech")}
    )
    assert r.status_code == 200 and r.json()["recorded"] == "bytes-served"
    r = await tracker.client.post(
        url, json={"node_id": nid("leech"), "role": "leecher", "bytes": m.size}
    )
    assert r.status_code == 200 and r.json()["recorded"] == "download-completed"
    d = await detail(tracker, m)
    assert d.downloads == 1
    assert d.leechers == []
    listed = (await tracker.client.get("/v1/files")).json()["items"][0]
    assert listed["downloads"] == 1
    async with tracker.state.db.read() as s:
        events = (
            await s.execute(select(Event.kind, Event.node_id, Event.peer_id, Event.nbytes))
        ).all()
    assert ("bytes-served", nid("h1"), nid("leech"), m.size) in events
    assert ("download-completed", nid("leech"), None, m.size) in events
    assert_problem(
        await tracker.client.post(
            url, json={"node_id": nid("leech"), "role": "seeder", "bytes": 1}
        ),
        422,
        "invalid-input",
        "body.role",
    )
    assert_problem(
        await tracker.client.post(
            url, json={"node_id": nid("ghost"), "role": "leecher", "bytes": 1}
        ),
        400,
        "unknown-node",
    )


async def test_reports_on_a_withdrawn_file_are_refused(tracker: Running) -> None:
    m = await registered(tracker)
    await tracker.client.delete(f"/v1/files/{m.file_id}", params={"node_id": nid("owner")})
    for path, payload in [
        ("leechers", {"node_id": nid("leech"), "state": "started"}),
        ("replicas", {"node_id": nid("leech"), "held": m.chunk_ids}),
        ("downloads", {"node_id": nid("leech"), "role": "leecher", "bytes": 1}),
    ]:
        r = await tracker.client.post(f"/v1/files/{m.file_id}/{path}", json=payload)
        assert_problem(r, 404, "not-found", "withdrawn")


async def test_stats(tracker: Running) -> None:
    empty = Stats.model_validate_json((await tracker.client.get("/v1/stats")).content)
    assert empty == Stats(
        nodes_online=0,
        nodes_total=0,
        capacity_bytes=0,
        free_bytes=0,
        files=0,
        chunks=0,
        under_replicated=0,
    )
    m = await registered(tracker, 3, target=2)  # one holder per chunk, two wanted
    st = Stats.model_validate_json((await tracker.client.get("/v1/stats")).content)
    assert (st.nodes_online, st.nodes_total) == (3, 3)
    assert (st.capacity_bytes, st.free_bytes) == (3 * 2 * 10**9, 3 * 10**9)
    assert (st.files, st.chunks, st.under_replicated) == (1, 3, 3)
    await tracker.client.post(
        f"/v1/files/{m.file_id}/replicas", json={"node_id": nid("leech"), "held": m.chunk_ids[:2]}
    )
    st = Stats.model_validate_json((await tracker.client.get("/v1/stats")).content)
    assert st.under_replicated == 1


async def test_health_openapi_and_unknown_routes(tracker: Running) -> None:
    r = await tracker.client.get("/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    spec = (await tracker.client.get("/openapi.json")).json()
    for path in [
        "/v1/nodes/announce",
        "/v1/nodes",
        "/v1/files",
        "/v1/files/{file_id}",
        "/v1/files/{file_id}/leechers",
        "/v1/files/{file_id}/replicas",
        "/v1/files/{file_id}/downloads",
        "/v1/health",
        "/v1/stats",
    ]:
        assert path in spec["paths"], path
    assert "delete" in spec["paths"]["/v1/files/{file_id}"]
    assert "FileDetail" in spec["components"]["schemas"]
    assert_problem(await tracker.client.get("/v1/nothing"), 404, "not-found")
    assert_problem(await tracker.client.put("/v1/health"), 405, "http-405")
