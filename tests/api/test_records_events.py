"""Operation records (append-only, every mutating call) and aggregated events."""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import replace

import anyio.to_thread
import fastapi.routing
import pytest
from fastapi import APIRouter, Request, Response
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

import gaia.api.routes
from gaia.api import deps
from gaia.api.deps import CommittingRoute, PrincipalDep, SessionDep, audit, inline_write
from gaia.domain.errors import Conflict
from gaia.platform import Platform
from gaia.store import events
from gaia.store.identity import PrincipalCache
from gaia.store.models import Business, Event, OperationRecord
from tests.conftest import World
from tests.support.waiting import eventually
from tests.support.writers import writer_turn_held


def _records(client: TestClient, headers: dict[str, str], **params: str) -> list[dict]:
    r = client.get("/api/v1/records", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_accepted_and_rejected_calls_are_both_recorded(world: World) -> None:
    c = world.client
    ok = c.patch(
        "/api/v1/businesses/alpha",
        json={"description": "OCR team"},
        headers=world.as_("business-admin"),
    )
    assert ok.status_code == 200
    denied = c.put(
        "/api/v1/businesses/alpha/quotas/sim-1",
        json={"hard": {"cpu": 999}},
        headers=world.as_("developer"),
    )
    assert denied.status_code == 403
    invalid = c.post("/api/v1/businesses", json={"name": "NOT VALID"}, headers=world.admin)
    assert invalid.status_code == 422

    rows = _records(c, world.admin, business="alpha")
    update = next(r for r in rows if r["action"] == "business.update")
    assert update["actor"] == "ba" and update["result"] == "success"
    assert update["summary"] == "updated description"
    refused = next(r for r in rows if r["action"] == "quota.put")
    assert refused["actor"] == "dev" and refused["result"] == "failure"
    assert refused["status_code"] == 403 and "only a platform administrator" in refused["error"]
    bad = _records(c, world.admin, result="failure", action="create_business")
    assert bad and bad[0]["status_code"] == 422 and "name" in bad[0]["error"]


def test_a_successful_call_commits_its_record_in_its_own_single_write_transaction(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    """One write transaction per accepted call: SQLite's write lock is taken once, not twice."""
    assert client.get("/api/v1/users/me", headers=admin).status_code == 200  # token seen, cached
    began: list[str] = []

    def on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("sqlite_begin") == "IMMEDIATE":
            began.append("write")

    event.listen(platform.db.engine, "begin", on_begin)
    try:
        r = client.post("/api/v1/businesses", json={"name": "ocr"}, headers=admin)
    finally:
        event.remove(platform.db.engine, "begin", on_begin)
    assert r.status_code == 201
    assert began == ["write"]
    [row] = [x for x in _records(client, admin, action="business.create")]
    assert (row["result"], row["status_code"], row["target"]) == ("success", 201, "business/ocr")


def test_a_change_commits_in_its_route_thread_before_the_response_is_built(
    client: TestClient, admin: dict[str, str], platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write transaction (on SQLite, the writer turn) is not held while the request hops
    back to the event loop to validate its response and run the session's teardown."""
    steps: list[str] = []
    validate = fastapi.routing.serialize_response

    async def serialize_response(**kwargs: object) -> object:
        steps.append("response")
        return await validate(**kwargs)

    monkeypatch.setattr(fastapi.routing, "serialize_response", serialize_response)

    commit_change = deps._commit_change

    def committed(request: Request, session: Session) -> None:
        commit_change(request, session)  # the change and its record, committed
        if request.url.path == "/api/v1/businesses":
            steps.append("commit")

    monkeypatch.setattr(deps, "_commit_change", committed)
    r = client.post("/api/v1/businesses", json={"name": "early"}, headers=admin)
    assert r.status_code == 201 and r.json()["name"] == "early"
    assert steps == ["commit", "response"]
    [row] = _records(client, admin, action="business.create")
    assert (row["result"], row["status_code"], row["target"]) == ("success", 201, "business/early")


def test_every_api_router_commits_its_sync_changes_in_the_route_thread() -> None:
    package = gaia.api.routes
    names = [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    routers = {
        name: router
        for name in names
        if isinstance(router := getattr(importlib.import_module(name), "router", None), APIRouter)
    }
    assert len(routers) > 20
    assert {
        n: r.route_class for n, r in routers.items() if r.route_class is not CommittingRoute
    } == {}


def _count_hops(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """From now on, every hop from the event loop to a worker thread (anyio's ``run_sync``)."""
    hops: list[object] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Callable[..., object], *args: object, **kwargs: object) -> object:
        hops.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return hops


def test_a_cached_call_hops_to_a_worker_thread_as_few_times_as_it_can(
    client: TestClient, admin: dict[str, str], platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hop between the event loop and a worker thread waits for a thread to be scheduled:
    the session is made and (on SQLite) ended on the loop, a cached principal answered there,
    a change's response validated there."""
    principals = PrincipalCache(ttl_seconds=3600)  # no expiry while a slow machine runs this
    principals.watch(platform.db)
    monkeypatch.setattr(platform, "principals", principals)
    assert (
        client.post("/api/v1/businesses", json={"name": "hops"}, headers=admin).status_code == 201
    )
    assert client.get("/api/v1/businesses/hops", headers=admin).status_code == 200  # cached now
    hops = _count_hops(monkeypatch)
    r = client.get("/api/v1/businesses/hops/members", headers=admin)
    assert r.status_code == 200
    # the route and the response's validation (a page may be large: not on the loop);
    # PostgreSQL's end of transaction is a round trip
    assert len(hops) == (2 if platform.db.is_sqlite else 3), hops
    # an ``inline_read`` route: on SQLite none at all; on PostgreSQL its queries are round trips,
    # so the route still runs in a worker (its response is validated on the loop)
    hops.clear()
    r = client.get("/api/v1/businesses/hops", headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "hops"
    assert len(hops) == (0 if platform.db.is_sqlite else 2), hops
    # a change marked ``inline_write``: on SQLite, with the writer turn free, none at all; on
    # PostgreSQL the route, which commits in its own thread (with its operation record)
    hops.clear()
    r = client.patch("/api/v1/businesses/hops", json={"description": "d"}, headers=admin)
    assert r.status_code == 200 and r.json()["description"] == "d"
    assert len(hops) == (0 if platform.db.is_sqlite else 1), hops
    # any other change: the route, which commits in its own thread
    _test_routes(client)
    hops.clear()
    assert client.post("/api/v1/test-only/in-worker", headers=admin).status_code == 201
    assert len(hops) == 1, hops
    with platform.db.read_session() as session:
        names = set(session.scalars(select(Business.name)))
    assert {"in-worker"} <= names


def test_an_inline_change_awaits_a_busy_writer_turn_without_holding_the_loop(
    client: TestClient, admin: dict[str, str], platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer (a controller's pass) holds the turn: the change awaits it, and the loop
    goes on answering meanwhile; it lands, still on the loop, once the turn is free."""
    if not platform.db.is_sqlite:
        pytest.skip("PostgreSQL writers take no turn")
    principals = PrincipalCache(ttl_seconds=3600)
    principals.watch(platform.db)
    monkeypatch.setattr(platform, "principals", principals)
    assert (
        client.post("/api/v1/businesses", json={"name": "busy"}, headers=admin).status_code == 201
    )
    assert client.get("/api/v1/businesses/busy", headers=admin).status_code == 200
    with writer_turn_held(platform.db, business="by-a-controller") as held:
        hops = _count_hops(monkeypatch)
        answers: list[int] = []
        change = threading.Thread(
            target=lambda: answers.append(
                client.patch(
                    "/api/v1/businesses/busy", json={"description": "later"}, headers=admin
                ).status_code
            )
        )
        change.start()
        eventually(lambda: platform.db.writers_waiting == 1, "the change in line", 5, 0.01)
        # the loop is free: a read answers while the change awaits its turn on the loop
        r = client.get("/api/v1/businesses/busy", headers=admin)
        assert r.status_code == 200 and r.json()["description"] != "later"
        assert change.is_alive()
        held.let_go()
        change.join(10)
    assert answers == [200]
    assert hops == []  # neither the change nor the read left the loop
    r = client.get("/api/v1/businesses/busy", headers=admin)
    assert r.json()["description"] == "later"


def _test_routes(client: TestClient) -> None:
    """Routes only these tests mount: one that writes and then refuses, one that answers
    another status than it declares, an async change, and two through the API's route class
    (``CommittingRoute``): a change in a worker thread, and an ``inline_write`` change that
    writes and then refuses."""
    app = client.app
    if any(getattr(r, "path", "") == "/api/v1/test-only/in-worker" for r in app.routes):  # type: ignore[attr-defined]
        return
    router = APIRouter(route_class=CommittingRoute)

    @router.post("/api/v1/test-only/in-worker", status_code=201)
    def in_worker(request: Request, principal: PrincipalDep, session: SessionDep) -> None:
        audit(request, action="test.in-worker", target="business/in-worker")
        session.add(Business(name="in-worker"))

    @router.post("/api/v1/test-only/inline-half-done", status_code=201)
    @inline_write
    def inline_half_done(request: Request, principal: PrincipalDep, session: SessionDep) -> None:
        audit(request, action="test.inline-half-done", target="business/inline-half")
        session.add(Business(name="inline-half"))
        session.flush()
        raise Conflict("refused after writing, on the loop")

    app.include_router(router)  # type: ignore[attr-defined]

    @app.post("/api/v1/test-only/half-done", status_code=201)  # type: ignore[attr-defined]
    def half_done(request: Request, principal: PrincipalDep, session: SessionDep) -> None:
        audit(request, action="test.half-done", target="business/half")
        session.add(Business(name="half"))
        session.flush()
        raise Conflict("refused after writing")

    @app.post("/api/v1/test-only/accepted", status_code=201)  # type: ignore[attr-defined]
    def accepted(request: Request, principal: PrincipalDep, session: SessionDep) -> Response:
        audit(request, action="test.accepted", target="business/queued")
        return Response(status_code=202)

    @app.post("/api/v1/test-only/async-write", status_code=201)  # type: ignore[attr-defined]
    async def async_write(request: Request, principal: PrincipalDep, session: SessionDep) -> None:
        audit(request, action="test.async-write", target="business/async")
        session.add(Business(name="async"))
        session.flush()


def test_an_async_route_never_blocks_the_event_loop_on_the_writer_turn(
    client: TestClient, admin: dict[str, str], platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite its first query runs on the loop's thread; its transaction has begun before,
    with the turn awaited on the loop (a cached principal: no hop) or in the worker an uncached
    lookup went to, never waited for on the loop: while a background pass holds the turn, the
    loop answers other requests."""
    if not platform.db.is_sqlite:
        pytest.skip("PostgreSQL writers take no turn")
    principals = PrincipalCache(ttl_seconds=3600)
    principals.watch(platform.db)
    monkeypatch.setattr(platform, "principals", principals)
    _test_routes(client)
    assert client.get("/api/v1/users/me", headers=admin).status_code == 200  # cached principal
    with writer_turn_held(platform.db, business="by-a-controller") as held:
        hops = _count_hops(monkeypatch)
        answers: list[int] = []
        change = threading.Thread(
            target=lambda: answers.append(
                client.post("/api/v1/test-only/async-write", headers=admin).status_code
            )
        )
        change.start()
        eventually(lambda: platform.db.writers_waiting == 1, "the change in line", 5, 0.01)
        assert client.get("/api/v1/users/me", headers=admin).status_code == 200
        assert change.is_alive()
        held.let_go()
        change.join(10)
    assert answers == [201]
    # the teardown's commit is the one hop (an async route's session ends in a worker)
    assert len(hops) == 1, hops


def test_a_refused_call_rolls_its_changes_back_and_is_still_recorded(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    _test_routes(client)
    assert client.post("/api/v1/test-only/half-done", headers=admin).status_code == 409
    with platform.db.read_session() as session:
        assert session.scalars(select(Business).where(Business.name == "half")).all() == []
        [row] = session.scalars(
            select(OperationRecord).where(OperationRecord.action == "test.half-done")
        ).all()
    assert (row.result, row.status_code, row.error) == ("failure", 409, "refused after writing")


def test_a_refused_inline_change_rolls_back_on_the_loop_and_is_still_recorded(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    _test_routes(client)
    r = client.post("/api/v1/test-only/inline-half-done", headers=admin)
    assert r.status_code == 409
    with platform.db.read_session() as session:
        assert session.scalars(select(Business).where(Business.name == "inline-half")).all() == []
        [row] = session.scalars(
            select(OperationRecord).where(OperationRecord.action == "test.inline-half-done")
        ).all()
    assert (row.result, row.status_code) == ("failure", 409)
    # the turn went back with the rollback: the next change goes through
    assert (
        client.post("/api/v1/businesses", json={"name": "next"}, headers=admin).status_code == 201
    )
    assert platform.db.writers_waiting == 0


def test_the_record_names_the_status_the_response_carried(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    _test_routes(client)
    assert client.post("/api/v1/test-only/accepted", headers=admin).status_code == 202
    with platform.db.read_session() as session:
        [row] = session.scalars(
            select(OperationRecord).where(OperationRecord.action == "test.accepted")
        ).all()
    assert (row.result, row.status_code) == ("success", 202)


def test_records_cannot_be_altered_through_the_api(world: World) -> None:
    c = world.client
    first = _records(c, world.admin)[-1]
    for method in ("PUT", "PATCH", "DELETE"):
        r = c.request(method, f"/api/v1/records/{first['id']}", json={}, headers=world.admin)
        assert r.status_code == 405, (method, r.status_code)
    assert c.get(f"/api/v1/records/{first['id']}", headers=world.admin).json() == first


def test_tenants_see_only_their_business_records(world: World) -> None:
    c = world.client
    c.patch(
        "/api/v1/businesses/beta",
        json={"description": "secret plans"},
        headers=world.as_("outsider"),
    )
    mine = _records(c, world.as_("viewer"))
    assert mine and {r["business"] for r in mine} == {"alpha"}
    theirs = _records(c, world.as_("outsider"))
    assert {r["business"] for r in theirs} == {"beta"}


def test_secrets_never_reach_records(world: World) -> None:
    c = world.client
    c.post(
        "/api/v1/users",
        json={"username": "eve", "password": "hunter2-hunter2"},
        headers=world.admin,
    )
    c.post("/api/v1/auth/login", json={"username": "eve", "password": "wrong-guess-123"})
    dump = str(_records(c, world.admin, limit="500"))
    assert "hunter2" not in dump and "wrong-guess" not in dump


def test_records_paginate_newest_first(world: World) -> None:
    c = world.client
    page1 = c.get("/api/v1/records", params={"limit": 3}, headers=world.admin).json()
    page2 = c.get(
        "/api/v1/records", params={"limit": 3, "cursor": page1["next_cursor"]}, headers=world.admin
    ).json()
    ids = [r["id"] for r in page1["items"] + page2["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6
    bad = c.get("/api/v1/records", params={"cursor": "!!!"}, headers=world.admin)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


def test_repeated_events_are_aggregated_even_concurrently(platform: Platform) -> None:
    def emit() -> None:
        with platform.db.write_session() as s:
            events.emit(
                s,
                object_kind="Instance",
                object_name="ocr-4",
                reason="BackOff",
                message="Back-off restarting failed container",
                type="Warning",
            )

    threads = [threading.Thread(target=emit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with platform.db.read_session() as s:
        rows = s.scalars(select(Event)).all()
    assert len(rows) == 1 and rows[0].count == 20
    assert rows[0].last_seen >= rows[0].first_seen


def test_a_repeated_event_names_its_last_user_and_keeps_it_when_none_is_given(
    platform: Platform,
) -> None:
    def emit(user: str) -> Event:
        with platform.db.write_session() as s:
            events.emit(
                s, object_kind="App", object_name="web", reason="Scaled", message="2", user=user
            )
        with platform.db.read_session() as s:
            return s.scalars(select(Event)).one()

    assert emit("alice").user == "alice"
    kept = emit("")  # a controller's repeat: no user of its own
    assert (kept.user, kept.count) == ("alice", 2)
    replaced = emit("bob")
    assert (replaced.user, replaced.count) == ("bob", 3)
    assert replaced.last_seen >= kept.last_seen >= replaced.first_seen


def test_a_batch_of_events_folds_repeats_and_adds_to_existing_rows(platform: Platform) -> None:
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)

    def ev(name: str, reason: str, seconds: int) -> events.NewEvent:
        return events.NewEvent(
            object_kind="Instance",
            object_name=name,
            reason=reason,
            message=f"{reason} container main",
            at=t0 + dt.timedelta(seconds=seconds),
        )

    with platform.db.write_session() as s:
        events.emit_many(s, [ev("web-0", "Created", 1), ev("web-0", "Started", 2)])
    batch = [ev("web-0", "Started", 10), ev("web-1", "Created", 11), ev("web-0", "Started", 12)]
    batch += [ev(f"web-{i}", "Created", 20) for i in range(2, 1202)]  # more than one chunk
    with platform.db.write_session() as s:
        events.emit_many(s, batch)
    with platform.db.read_session() as s:
        rows = {(e.object_name, e.reason): e for e in s.scalars(select(Event))}
    started = rows[("web-0", "Started")]
    assert started.count == 3
    assert (started.first_seen, started.last_seen) == (
        t0 + dt.timedelta(seconds=2),
        t0 + dt.timedelta(seconds=12),
    )
    assert rows[("web-0", "Created")].count == 1
    assert len(rows) == 2 + 1 + 1200
    # ids follow the order events happened in: web-0's rows first, then web-1's
    assert rows[("web-0", "Created")].id < rows[("web-1", "Created")].id


def test_events_handed_over_again_are_not_counted_twice(platform: Platform) -> None:
    """A new app controller (a restart, a new leader) writes again every event its cluster
    still holds: those the store has seen leave their rows as they were."""
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    held = [
        events.NewEvent(
            object_kind="Instance",
            object_name="web-0",
            reason=reason,
            message=reason,
            at=t0 + dt.timedelta(seconds=i),
        )
        for i, reason in enumerate(["Scheduled", "Pulled", "Started", "Started"])
    ]
    for _ in range(2):  # the first controller, then its successor from the cluster's first event
        with platform.db.write_session() as s:
            events.emit_many(s, held)
    later = replace(held[-1], at=t0 + dt.timedelta(seconds=60))  # a real repeat, since
    with platform.db.write_session() as s:
        events.emit_many(s, [later])
    with platform.db.read_session() as s:
        rows = {e.reason: e for e in s.scalars(select(Event))}
    assert {r: e.count for r, e in rows.items()} == {"Scheduled": 1, "Pulled": 1, "Started": 3}
    assert rows["Started"].last_seen == t0 + dt.timedelta(seconds=60)


def test_events_api_filters_and_scopes(world: World) -> None:
    c = world.client
    created = c.get("/api/v1/events", params={"reason": "Created"}, headers=world.admin).json()
    assert {e["object_name"] for e in created["items"]} == {"alpha", "beta"}
    assert created["items"][0]["user"] == "admin" and created["items"][0]["count"] == 1
    seen = c.get("/api/v1/events", headers=world.as_("viewer")).json()["items"]
    assert {e["business"] for e in seen} == {"alpha"}
