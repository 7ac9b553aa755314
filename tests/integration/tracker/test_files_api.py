"""Registering, listing, reading and withdrawing files."""

from __future__ import annotations

from sqlalchemy import func, select

from p2pshare.core.manifest import manifest_of_bytes
from p2pshare.core.messages import FileDetail, RegistrationAck
from p2pshare.tracker.models import Chunk, Event, File, Replica
from tests.integration.tracker.conftest import Running
from tests.integration.tracker.support import (
    CHUNK,
    CREATED,
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


async def count(t: Running, model: type) -> int:
    async with t.state.db.read() as s:
        return await s.scalar(select(func.count()).select_from(model)) or 0


async def test_register_then_read_detail(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"), node("h2"))
    m = manifest(3)
    r = await tracker.client.post(
        "/v1/files", json=body(registration(m, nid("owner"), [nid("h1"), nid("h2")]))
    )
    assert r.status_code == 201, r.text
    ack = RegistrationAck.model_validate_json(r.content)
    assert (ack.file_id, ack.state) == (m.file_id, "available")
    assert ack.registered_at == tracker.clock.now()

    r = await tracker.client.get(f"/v1/files/{m.file_id}")
    assert r.status_code == 200
    detail = FileDetail.model_validate_json(r.content)
    assert detail.manifest == m
    assert detail.owner == nid("owner")
    assert detail.state == "available"
    assert [c.chunk_id for c in detail.chunks] == m.chunk_ids
    assert [c.index for c in detail.chunks] == [0, 1, 2]
    for c in detail.chunks:
        assert [h.node_id for h in c.holders] == ids("h1", "h2")
        assert all(h.online for h in c.holders)
        assert c.replicas_online == 2
    assert sorted(s.node_id for s in detail.seeders) == ids("h1", "h2")
    assert detail.leechers == []
    assert detail.downloads == 0
    assert await count(tracker, Chunk) == 3
    assert await count(tracker, Replica) == 6


async def test_register_is_idempotent(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    reg = body(registration(manifest(2), nid("owner"), [nid("h1")]))
    first = await tracker.client.post("/v1/files", json=reg)
    assert first.status_code == 201
    tracker.clock.advance(60)
    again = await tracker.client.post("/v1/files", json=reg)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert await count(tracker, File) == 1
    async with tracker.state.db.read() as s:
        kinds = (await s.scalars(select(Event.kind))).all()
    assert kinds == ["file-registered"]


async def test_same_file_id_other_owner_or_manifest_conflicts(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("other"), node("h1"))
    m = manifest(2)
    assert (
        await tracker.client.post(
            "/v1/files", json=body(registration(m, nid("owner"), [nid("h1")]))
        )
    ).is_success
    r = await tracker.client.post(
        "/v1/files", json=body(registration(m, nid("other"), [nid("h1")]))
    )
    assert_problem(r, 409, "conflict", m.file_id, "another node")
    renamed = m.model_copy(update={"name": "other-name.bin"})
    assert renamed.file_id == m.file_id
    r = await tracker.client.post(
        "/v1/files", json=body(registration(renamed, nid("owner"), [nid("h1")]))
    )
    assert_problem(r, 409, "conflict", "different manifest")


async def test_manifest_that_does_not_verify_is_refused(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    m = manifest(3)
    forged = m.model_copy(update={"file_id": "ab" * 32})
    r = await tracker.client.post(
        "/v1/files", json=body(registration(forged, nid("owner"), [nid("h1")]))
    )
    assert_problem(r, 400, "invalid-manifest", "does not match")
    assert await count(tracker, File) == 0
    assert await count(tracker, Replica) == 0


async def test_unknown_holder_or_owner_is_refused(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    m = manifest(2)
    r = await tracker.client.post(
        "/v1/files", json=body(registration(m, nid("owner"), [nid("h1"), nid("ghost")]))
    )
    assert_problem(r, 400, "unknown-node", f"holder {nid('ghost')}")
    r = await tracker.client.post(
        "/v1/files", json=body(registration(m, nid("nobody"), [nid("h1")]))
    )
    assert_problem(r, 400, "unknown-node", f"owner {nid('nobody')}")
    assert await count(tracker, File) == 0
    assert await count(tracker, Replica) == 0
    assert (await tracker.client.get(f"/v1/files/{m.file_id}")).status_code == 404


async def test_chunk_without_holder_is_refused(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    m = manifest(3)
    reg = body(registration(m, nid("owner"), [nid("h1")]))
    reg["placement"] = reg["placement"][1:]
    reg["acks"] = reg["acks"][1:]
    r = await tracker.client.post("/v1/files", json=reg)
    assert_problem(r, 422, "invalid-input", "no holder for chunk")
    assert await count(tracker, File) == 0


async def test_holder_without_ack_and_wrong_ack_size_are_refused(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    m = manifest(2)
    reg = body(registration(m, nid("owner"), [nid("h1")]))
    no_ack = {**reg, "acks": reg["acks"][1:]}
    assert_problem(
        await tracker.client.post("/v1/files", json=no_ack), 422, "invalid-input", "no ack"
    )
    wrong = {**reg, "acks": [{**reg["acks"][0], "size": 5}, *reg["acks"][1:]]}
    assert_problem(
        await tracker.client.post("/v1/files", json=wrong), 400, "invalid-input", "5 bytes"
    )
    assert await count(tracker, File) == 0


async def test_registration_validation_names_the_field(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    reg = body(registration(manifest(2), nid("owner"), [nid("h1")]))
    reg["manifest"] = {**reg["manifest"], "name": "../etc/passwd"}
    doc = assert_problem(await tracker.client.post("/v1/files", json=reg), 422, "invalid-input")
    assert doc["errors"][0]["field"] == "body.manifest.name"
    assert "body.manifest.name" in doc["detail"]


async def test_file_with_a_repeated_chunk(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    block = bytes(range(256)) * (CHUNK // 256)
    m = manifest_of_bytes(block * 3 + b"tail", "repeat.bin", CREATED, CHUNK)
    assert len(set(m.chunk_ids)) == 2 and len(m.chunk_ids) == 4
    r = await tracker.client.post(
        "/v1/files", json=body(registration(m, nid("owner"), [nid("h1")]))
    )
    assert r.status_code == 201, r.text
    detail = FileDetail.model_validate_json(
        (await tracker.client.get(f"/v1/files/{m.file_id}")).content
    )
    assert [c.chunk_id for c in detail.chunks] == m.chunk_ids
    assert all([h.node_id for h in c.holders] == [nid("h1")] for c in detail.chunks)
    assert [s.node_id for s in detail.seeders] == [nid("h1")]
    assert await count(tracker, Chunk) == 4
    assert await count(tracker, Replica) == 2


async def test_empty_file_registers(tracker: Running) -> None:
    await announce(tracker.client, node("owner"))
    m = manifest_of_bytes(b"", "empty", CREATED, CHUNK)
    r = await tracker.client.post(
        "/v1/files", json=body(registration(m, nid("owner"), [nid("owner")]))
    )
    assert r.status_code == 201, r.text
    detail = (await tracker.client.get(f"/v1/files/{m.file_id}")).json()
    assert detail["chunks"] == [] and detail["seeders"] == []


async def test_detail_refuses_bad_and_unknown_ids(tracker: Running) -> None:
    r = await tracker.client.get("/v1/files/not-a-hex-id")
    assert_problem(r, 400, "invalid-id", "file id")
    r = await tracker.client.get("/v1/files/" + "AB" * 32)
    assert_problem(r, 400, "invalid-id", "file id")
    r = await tracker.client.get("/v1/files/" + "ab" * 32)
    assert_problem(r, 404, "not-found", "ab" * 32)


async def test_list_files_pagination_and_name_filter(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    names = ["Holiday.jpg", "notes.txt", "holiday-2.JPG", "report.pdf", "x_y.bin"]
    ids = []
    for i, name in enumerate(names):
        m = manifest(2, seed=i + 10, name=name)
        ids.append(m.file_id)
        assert (
            await tracker.client.post(
                "/v1/files", json=body(registration(m, nid("owner"), [nid("h1")]))
            )
        ).is_success
        tracker.clock.advance(1)
    doc = (await tracker.client.get("/v1/files?limit=2")).json()
    assert doc["total"] == 5
    assert [f["name"] for f in doc["items"]] == ["x_y.bin", "report.pdf"]  # newest first
    doc = (await tracker.client.get("/v1/files?limit=2&offset=4")).json()
    assert [f["name"] for f in doc["items"]] == ["Holiday.jpg"]
    doc = (await tracker.client.get("/v1/files?name=HOLIDAY")).json()
    assert sorted(f["name"] for f in doc["items"]) == ["Holiday.jpg", "holiday-2.JPG"]
    assert doc["total"] == 2
    doc = (await tracker.client.get("/v1/files?name=_")).json()  # LIKE wildcards are literal
    assert [f["name"] for f in doc["items"]] == ["x_y.bin"]
    item = (await tracker.client.get("/v1/files?name=notes")).json()["items"][0]
    assert item == {
        "file_id": ids[1],
        "name": "notes.txt",
        "size": 64 * 1024 + 1000,
        "chunks": 2,
        "owner": nid("owner"),
        "state": "available",
        "created": "2030-01-01T00:00:01Z",
        "downloads": 0,
    }
    for query, field in [
        ("limit=0", "query.limit"),
        ("limit=501", "query.limit"),
        ("offset=-1", "query.offset"),
    ]:
        assert_problem(await tracker.client.get(f"/v1/files?{query}"), 422, "invalid-input", field)


async def test_delete_by_owner_only_and_idempotent(tracker: Running) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    m = manifest(2)
    await tracker.client.post("/v1/files", json=body(registration(m, nid("owner"), [nid("h1")])))
    url = f"/v1/files/{m.file_id}"
    assert_problem(
        await tracker.client.delete(url, params={"node_id": nid("h1")}), 403, "forbidden"
    )
    # signed by the owner, so the query check is what refuses them
    assert_problem(
        await send_signed(tracker.client, "DELETE", url, "owner"),
        422,
        "invalid-input",
        "query.node_id",
    )
    assert_problem(
        await send_signed(tracker.client, "DELETE", url, "owner", params={"node_id": "bad id"}),
        400,
        "invalid-input",
        "node_id",
    )
    assert (await tracker.client.get(url)).status_code == 200
    r = await tracker.client.delete(url, params={"node_id": nid("owner")})
    assert r.status_code == 200
    assert r.json()["recorded"] == "file-deleted"
    tracker.clock.advance(5)
    again = await tracker.client.delete(url, params={"node_id": nid("owner")})
    assert again.json() == r.json()
    assert_problem(await tracker.client.get(url), 404, "not-found", "withdrawn")
    assert (await tracker.client.get("/v1/files")).json()["total"] == 0
    listed = (await tracker.client.get("/v1/files?include_deleted=true")).json()["items"]
    assert [(f["file_id"], f["state"]) for f in listed] == [(m.file_id, "deleted")]
    unknown = "cd" * 32
    assert_problem(
        await tracker.client.delete(f"/v1/files/{unknown}", params={"node_id": nid("owner")}),
        404,
        "not-found",
    )
    assert_problem(
        await tracker.client.delete("/v1/files/zz", params={"node_id": nid("owner")}),
        400,
        "invalid-id",
    )
    # the owner may register it again
    r = await tracker.client.post(
        "/v1/files", json=body(registration(m, nid("owner"), [nid("h1")]))
    )
    assert r.status_code == 201
    assert (await tracker.client.get(url)).status_code == 200
