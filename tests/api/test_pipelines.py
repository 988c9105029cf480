"""The pipelines API (issue 18): validation, roles, write-only credentials, the signed webhook,
the run queue and its logs. No runner loop runs here: runs stay queued unless a test moves them."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from gaia.platform import Platform
from gaia.store import pipelines as store
from gaia.store.models import Pipeline, PipelineRun
from tests.conftest import World
from tests.support.waiting import eventually
from tests.support.writers import writer_turn_held

BIZ = "/api/v1/businesses/alpha"
PIPES = f"{BIZ}/pipelines"
GIT_URL = "https://git.example.com/alpha/web.git"
TOKEN = "ghp_s3cr3t-CLONE-token-value"  # distinctive, so a leak anywhere is found by substring
HOOK_SECRET = "whsec-0123456789-abcdef-SECRET"


def _create(world: World, body: dict[str, Any], who: str = "developer") -> Any:
    r = world.client.post(PIPES, json={"git_url": GIT_URL, **body}, headers=world.as_(who))
    assert r.status_code == 201, r.text
    return r.json()


def _signed(body: bytes, secret: str = HOOK_SECRET) -> dict[str, str]:
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Gaia-Signature": f"sha256={mac}", "Content-Type": "application/json"}


def test_pipeline_defaults_to_the_business_namespace_and_shows_the_secret_once(
    world: World,
) -> None:
    created = _create(world, {"name": "web"})
    assert created["repository"] == "alpha/web"
    assert created["branch"] == "main" and created["dockerfile"] == "Dockerfile"
    assert created["webhook_url"].endswith(f"/api/v1/hooks/pipelines/{created['id']}")
    assert isinstance(created["webhook_secret"], str) and len(created["webhook_secret"]) >= 32
    got = world.client.get(f"{PIPES}/web", headers=world.as_("viewer"))
    assert got.status_code == 200
    assert "webhook_secret" not in got.json()
    assert got.json()["has_git_credentials"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "git_url": "not a url"}, "git_url"),
        ({"name": "x", "dockerfile": "../Dockerfile"}, "dockerfile"),
        ({"name": "x", "context": "/etc"}, "context"),
        ({"name": "x", "build_args": {"1BAD": "v"}}, "build_args"),
        ({"name": "x", "schedule_minutes": 1}, "schedule_minutes"),
        ({"name": "x", "webhook_secret": "short"}, "webhook_secret"),
        ({"name": "Bad_Name"}, "name"),
    ],
)
def test_invalid_pipelines_are_refused(world: World, body: dict[str, Any], field: str) -> None:
    r = world.client.post(PIPES, json={"git_url": GIT_URL, **body}, headers=world.as_("developer"))
    assert r.status_code == 422, r.text
    assert field in r.text


def test_repository_outside_the_business_namespace_is_refused(world: World) -> None:
    for repository in ("beta/web", "public/web", "u/dev/web", "web"):
        r = world.client.post(
            PIPES,
            json={"name": "web", "git_url": GIT_URL, "repository": repository},
            headers=world.as_("developer"),
        )
        assert r.status_code == 422, r.text


def test_viewer_reads_but_cannot_create_run_or_cancel(world: World) -> None:
    _create(world, {"name": "web"})
    viewer = world.as_("viewer")
    assert world.client.get(PIPES, headers=viewer).status_code == 200
    r = world.client.post(PIPES, json={"name": "b", "git_url": GIT_URL}, headers=viewer)
    assert r.status_code == 403
    assert world.client.post(f"{PIPES}/web/runs", headers=viewer).status_code == 403
    r = world.client.post(f"{PIPES}/web/runs", headers=world.as_("developer"))
    assert r.status_code == 201 and r.json()["state"] == "queued"
    assert world.client.post(f"{PIPES}/web/runs/1/cancel", headers=viewer).status_code == 403


def test_git_credentials_are_write_only_and_never_logged(
    world: World, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = _create(world, {"name": "web", "git_credentials": f"ci:{TOKEN}"})
    assert created["has_git_credentials"] is True
    assert TOKEN not in json.dumps(created)
    r = world.client.patch(f"{PIPES}/web", json={"branch": "dev"}, headers=world.as_("developer"))
    assert r.status_code == 200 and r.json()["has_git_credentials"] is True
    with platform.db.read_session() as session:
        row = session.scalars(select(Pipeline).where(Pipeline.name == "web")).one()
        assert TOKEN.encode() not in (row.git_credentials_encrypted or b"")
        assert store.git_credentials(row, secrets=platform.secrets) == f"ci:{TOKEN}"
    records = world.client.get("/api/v1/records", headers=world.admin)
    for where in (records.text, caplog.text, world.client.get(PIPES, headers=world.admin).text):
        assert TOKEN not in where
    r = world.client.patch(
        f"{PIPES}/web", json={"clear_git_credentials": True}, headers=world.as_("developer")
    )
    assert r.json()["has_git_credentials"] is False


def test_webhook_needs_the_signature_of_the_pipelines_secret(world: World) -> None:
    created = _create(world, {"name": "web", "webhook_secret": HOOK_SECRET})
    hook = f"/api/v1/hooks/pipelines/{created['id']}"
    body = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
    c = world.client
    assert (
        c.post(hook, content=body, headers={"Content-Type": "application/json"}).status_code == 401
    )
    wrong = _signed(body, "another-secret-0123456789")
    assert c.post(hook, content=body, headers=wrong).status_code == 401
    tampered = _signed(body)
    assert c.post(hook, content=body + b" ", headers=tampered).status_code == 401
    unknown = c.post("/api/v1/hooks/pipelines/9999", content=body, headers=_signed(body))
    assert unknown.status_code == 401
    r = c.post(hook, content=body, headers=_signed(body))
    assert r.status_code == 202, r.text
    assert r.json()["run"] == 1
    run = c.get(f"{PIPES}/web/runs/1", headers=world.as_("viewer")).json()
    assert run["trigger"] == "webhook" and run["commit"] == "a" * 40


def test_a_webhook_never_blocks_the_event_loop_on_a_busy_writer_turn(
    world: World, platform: Platform
) -> None:
    """It takes no principal, so nothing began its transaction before its first query, which
    runs on the event loop: on SQLite that query waited there for the writer turn, and while a
    controller's pass held the turn every request of the server stalled (up to 30 s, the
    holder's commit included when it needed the loop). Now the wait is awaited."""
    if not platform.db.is_sqlite:
        pytest.skip("PostgreSQL writers take no turn")
    created = _create(world, {"name": "web", "webhook_secret": HOOK_SECRET})
    hook = f"/api/v1/hooks/pipelines/{created['id']}"
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    with writer_turn_held(platform.db, business="by-a-controller") as held:
        answers: list[int] = []
        push = threading.Thread(
            target=lambda: answers.append(
                world.client.post(hook, content=body, headers=_signed(body)).status_code
            )
        )
        push.start()
        eventually(lambda: platform.db.writers_waiting == 1, "the push in line", 5, 0.01)
        started = time.monotonic()
        r = world.client.get("/api/healthz")  # the loop answers while the push waits
        assert r.status_code == 200 and time.monotonic() - started < 5
        assert push.is_alive()
        held.let_go()
        push.join(10)
    assert answers == [202]


def test_webhook_ignores_a_push_to_another_branch(world: World) -> None:
    created = _create(world, {"name": "web", "webhook_secret": HOOK_SECRET})
    body = json.dumps({"ref": "refs/heads/feature"}).encode()
    r = world.client.post(
        f"/api/v1/hooks/pipelines/{created['id']}", content=body, headers=_signed(body)
    )
    assert r.status_code == 202 and r.json()["run"] is None
    runs = world.client.get(f"{PIPES}/web/runs", headers=world.as_("viewer")).json()
    assert runs["items"] == []


def test_webhook_ignores_a_deleted_branch_and_records_what_it_did(world: World) -> None:
    created = _create(world, {"name": "web", "webhook_secret": HOOK_SECRET})
    hook = f"/api/v1/hooks/pipelines/{created['id']}"
    body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40, "deleted": True}).encode()
    r = world.client.post(hook, content=body, headers=_signed(body))
    assert r.status_code == 202 and r.json()["run"] is None, r.text
    assert "deleted" in r.json()["message"]
    body = json.dumps({"ref": "refs/heads/main", "after": "not-a-commit"}).encode()
    r = world.client.post(hook, content=body, headers=_signed(body))
    assert r.json()["run"] == 1
    run = world.client.get(f"{PIPES}/web/runs/1", headers=world.as_("viewer")).json()
    assert run["commit"] == ""  # not a commit id: the branch head is built
    records = world.client.get(
        "/api/v1/records", params={"action": "pipeline.webhook"}, headers=world.admin
    ).json()["items"]
    assert len(records) == 2
    assert {r["actor"] for r in records} == {"webhook"}
    assert (
        records[0]["target"].endswith("/pipeline/web") and "run 1 queued" in records[0]["summary"]
    )


def test_runs_are_numbered_newest_first_and_a_queued_one_cancels_at_once(world: World) -> None:
    _create(world, {"name": "web"})
    dev = world.as_("developer")
    for n in (1, 2, 3):
        assert world.client.post(f"{PIPES}/web/runs", headers=dev).json()["number"] == n
    listed = world.client.get(f"{PIPES}/web/runs", headers=dev).json()["items"]
    assert [r["number"] for r in listed] == [3, 2, 1]
    r = world.client.post(f"{PIPES}/web/runs/2/cancel", headers=dev)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    again = world.client.post(f"{PIPES}/web/runs/2/cancel", headers=dev)
    assert again.status_code == 409


def test_claim_respects_the_per_business_limit_and_a_running_cancel_is_requested(
    world: World, platform: Platform
) -> None:
    _create(world, {"name": "web"})
    dev = world.as_("developer")
    for _ in range(3):
        world.client.post(f"{PIPES}/web/runs", headers=dev)
    lease = dt.timedelta(minutes=1)
    with platform.db.write_session() as session:
        first = store.claim_run(session, lease=lease, per_business=2, total=4)
        second = store.claim_run(session, lease=lease, per_business=2, total=4)
        third = store.claim_run(session, lease=lease, per_business=2, total=4)
        assert first is not None and second is not None and third is None
        assert {first.number, second.number} == {1, 2}
    r = world.client.post(f"{PIPES}/web/runs/1/cancel", headers=dev)
    assert r.status_code == 200
    assert r.json()["state"] == "running" and r.json()["cancel_requested"] is True


def test_logs_are_paged_bounded_and_the_failure_comes_first(
    world: World, platform: Platform
) -> None:
    _create(world, {"name": "web"})
    world.client.post(f"{PIPES}/web/runs", headers=world.as_("developer"))
    with platform.db.write_session() as session:
        run = session.scalars(select(PipelineRun)).one()
        store.append_logs(session, run_id=run.id, lines=[("clone", "x" * 10_000), ("build", "b")])
        store.finish_run(
            session,
            run_id=run.id,
            state="failed",
            steps=[{"name": "build", "state": "failed", "exit_code": 1}],
            failure={"step": "build", "instruction": "RUN false", "line": 3, "reason": "exit 1"},
            commit="",
            image="",
            digest="",
        )
    viewer = world.as_("viewer")
    page = world.client.get(f"{PIPES}/web/runs/1/logs?limit=1", headers=viewer).json()
    assert [x["seq"] for x in page["items"]] == [0]
    assert len(page["items"][0]["line"].encode()) <= store.MAX_LOG_LINE_BYTES + 20
    rest = world.client.get(
        f"{PIPES}/web/runs/1/logs?after={page['next_after']}", headers=viewer
    ).json()
    assert [x["line"] for x in rest["items"]] == ["b"] and rest["finished"] is True
    got = world.client.get(f"{PIPES}/web/runs/1", headers=viewer)
    assert next(iter(got.json())) == "failure"
    assert got.json()["failure"]["line"] == 3
    follow = world.client.get(
        f"{PIPES}/web/runs/1/logs?follow=true", headers={**viewer, "Accept": "text/event-stream"}
    )
    assert follow.status_code == 200
    assert "event: end" in follow.text and '"line":"b"' in follow.text


def test_a_scheduled_pipeline_is_queued_once_per_interval(world: World, platform: Platform) -> None:
    _create(world, {"name": "nightly", "schedule_minutes": 60})
    _create(world, {"name": "manual"})
    with platform.db.write_session() as session:
        row = session.scalars(select(Pipeline).where(Pipeline.name == "nightly")).one()
        start = row.created_at
        assert store.enqueue_scheduled(session, now=start + dt.timedelta(minutes=59)) == []
        due = start + dt.timedelta(minutes=61)
        runs = store.enqueue_scheduled(session, now=due)
        assert [(r.trigger, r.number) for r in runs] == [("schedule", 1)]
        assert store.enqueue_scheduled(session, now=due + dt.timedelta(minutes=1)) == []
        later = store.enqueue_scheduled(session, now=due + dt.timedelta(minutes=61))
        assert [r.number for r in later] == [2]


def test_the_runners_probe_says_when_its_pass_has_work(world: World, platform: Platform) -> None:
    """The runner reads before it writes: a due schedule, a queued run and a run left past its
    lease are work; otherwise its pass takes no write transaction."""
    _create(world, {"name": "nightly", "schedule_minutes": 60})

    def probe(now: dt.datetime) -> bool:
        with platform.db.read_session() as session:
            return store.anything_to_do(session, now=now)

    with platform.db.read_session() as session:
        start = session.scalars(select(Pipeline).where(Pipeline.name == "nightly")).one().created_at
    assert not probe(start + dt.timedelta(minutes=59))
    assert probe(start + dt.timedelta(minutes=61))  # the schedule is due
    world.client.post(f"{PIPES}/nightly/runs", headers=world.as_("developer"))
    assert probe(start + dt.timedelta(minutes=1))  # a run is queued
    with platform.db.write_session() as session:
        claimed = store.claim_run(
            session, lease=dt.timedelta(minutes=5), per_business=2, total=4, now=start
        )
        assert claimed is not None
    assert not probe(start + dt.timedelta(minutes=1))  # running, its lease holding
    assert probe(start + dt.timedelta(minutes=6))  # its lease ran out: to be taken again


def test_a_git_url_to_this_machine_or_a_private_address_is_refused(world: World) -> None:
    """A tenant's git URL is an outbound connection (or a read of this machine's disk): file://
    only where GAIA_PIPELINE_LOCAL_GIT allows it, and no host the egress policy refuses."""
    for url in ("file:///var/lib/gaia", "https://127.0.0.1/x.git", "https://localhost/x.git",
                "https://169.254.169.254/latest.git"):  # fmt: skip
        r = world.client.post(PIPES, json={"name": "p", "git_url": url}, headers=world.admin)
        assert r.status_code == 422, (url, r.text)
