"""The pipelines' console pages (gaia/console/pages/pipelines.py): the list with each
pipeline's last run, the creation form (its errors, the webhook secret shown once), a pipeline's
runs and buttons by role, and the build record with the failure first and live logs.

No runner loop runs here: a test writes a run's outcome through the store, as the runner would
(tests/delivery/test_pipeline_run.py drives real builds)."""

from __future__ import annotations

import re
from typing import Any

from gaia.platform import Platform
from gaia.store import pipelines as store
from gaia.store.models import PipelineRun
from tests.conftest import World
from tests.console.test_clusters import html, post

GIT_URL = "https://git.example.com/alpha/web.git"
FORM = {
    "biz": "alpha",
    "name": "web",
    "git_url": GIT_URL,
    "branch": "main",
    "dockerfile": "Dockerfile",
    "context": ".",
    "build_args": "VERSION=1.2\nMODE=prod",
    "repository": "",
    "git_username": "ci",
    "git_token": "tok-CONSOLE-secret-value",
    "deploy_app": "",
    "deploy_instances": "",
    "schedule_minutes": "",
}


def _finish(platform: Platform, number: int, **outcome: Any) -> None:
    with platform.db.write_session() as session:
        run = session.query(PipelineRun).filter_by(number=number).one()
        store.append_logs(session, run_id=run.id, lines=outcome.pop("lines", []))
        store.finish_run(session, run_id=run.id, **outcome)


def test_a_developer_creates_a_pipeline_and_sees_the_webhook_secret_once(world: World) -> None:
    page = html(world, "developer", "/console/pipelines")
    assert 'href="/console/pipelines/new' in page and "No pipelines match." in page
    assert 'href="/console/pipelines"' in page  # in the navigation
    r = post(world, "developer", "/console/pipelines/new", FORM)
    assert r.status_code == 201, r.text[:2000]
    secret = re.search(r'data-copy="([A-Za-z0-9_-]{32,})"', r.text)
    assert secret is not None and "shown only this once" in r.text
    assert "/api/v1/hooks/pipelines/" in r.text
    page = html(world, "viewer", "/console/b/alpha/pipelines/web")
    assert secret.group(1) not in page and "tok-CONSOLE-secret-value" not in page
    assert "VERSION=1.2" in page and "with stored credentials" in page
    assert "No runs yet." in page
    # a viewer sees the pipeline but no button that would be refused
    assert "/run" not in re.sub(r"/runs", "", page) and "/delete" not in page
    page = html(world, "viewer", "/console/pipelines")
    assert "never run" in page and 'href="/console/pipelines/new' not in page
    html(world, "outsider", "/console/b/alpha/pipelines/web", status=404)


def test_the_form_shows_errors_on_their_fields(world: World) -> None:
    r = post(world, "developer", "/console/pipelines/new", {**FORM, "build_args": "no-equals"})
    assert r.status_code == 422 and "line 1: write NAME=value" in r.text
    r = post(world, "developer", "/console/pipelines/new", {**FORM, "git_url": "ftp://x/y"})
    assert r.status_code == 422
    assert re.search(r'id="p-git_url"[^>]*aria-invalid="true"', r.text), r.text[:3000]
    assert 'value="ftp://x/y"' in r.text  # what was typed stays
    assert "tok-CONSOLE-secret-value" not in r.text  # the token is never echoed
    r = post(world, "viewer", "/console/pipelines/new", FORM)
    assert r.status_code == 403


def test_run_now_and_the_build_record_shows_the_failure_first(
    world: World, platform: Platform
) -> None:
    assert post(world, "developer", "/console/pipelines/new", FORM).status_code == 201
    r = post(world, "viewer", "/console/b/alpha/pipelines/web/run", {})
    assert r.status_code == 303 and "error=" in r.headers["location"]
    r = post(world, "developer", "/console/b/alpha/pipelines/web/run", {})
    assert r.status_code == 303
    assert r.headers["location"].startswith("/console/b/alpha/pipelines/web/runs/1?ok=")
    # queued: the developer may cancel, and the page follows the log live
    page = html(world, "developer", "/console/b/alpha/pipelines/web/runs/1")
    assert "/runs/1/cancel" in page
    assert 'data-build-follow="/api/v1/businesses/alpha/pipelines/web/runs/1/logs?follow=true' in (
        page
    )
    assert "/runs/1/cancel" not in html(world, "viewer", "/console/b/alpha/pipelines/web/runs/1")
    _finish(
        platform,
        1,
        state="failed",
        steps=[
            {"name": "clone", "state": "ok", "duration": 0.4, "exit_code": 0},
            {"name": "build", "state": "failed", "duration": 75.0, "exit_code": 1},
        ],
        failure={
            "step": "build",
            "instruction": "RUN make test",
            "line": 3,
            "reason": "make: *** [test] Error 2",
        },
        commit="c" * 40,
        image="",
        digest="",
        lines=[("clone", "Cloning into src"), ("build", "STEP 3/3: RUN make test")],
    )
    page = html(world, "viewer", "/console/b/alpha/pipelines/web/runs/1")
    failure = page.index("Failed at step build")
    assert failure < page.index('id="steps"') < page.index('id="log"')
    assert "Dockerfile line 3" in page and "RUN make test" in page and "Error 2" in page
    assert "1 min 15 s" in page and "c" * 40 in page
    assert "STEP 3/3: RUN make test" in page and "data-build-follow" not in page
    listed = html(world, "viewer", "/console/pipelines")
    assert "#1 failed" in listed and "at build" in listed
    runs = html(world, "viewer", "/console/b/alpha/pipelines/web")
    assert "line 3" in runs and "1 min 15 s" in runs


def test_a_long_log_is_paged_and_deleting_asks_first(world: World, platform: Platform) -> None:
    assert post(world, "developer", "/console/pipelines/new", FORM).status_code == 201
    assert post(world, "developer", "/console/b/alpha/pipelines/web/run", {}).status_code == 303
    lines = [("build", f"line number {i}") for i in range(2500)]
    _finish(
        platform, 1, state="succeeded", steps=[], failure=None, commit="", image="", digest="",
        lines=lines,
    )  # fmt: skip
    page = html(world, "viewer", "/console/b/alpha/pipelines/web/runs/1")
    assert "line number 1999<" in page and "line number 2000<" not in page
    assert 'href="/console/b/alpha/pipelines/web/runs/1?after=1999"' in page
    page = html(world, "viewer", "/console/b/alpha/pipelines/web/runs/1?after=1999")
    assert "line number 2000<" in page and "line number 2499<" in page
    page = html(world, "developer", "/console/b/alpha/pipelines/web")
    assert 'data-confirm="Delete web and all its build records?' in page
    r = post(world, "developer", "/console/b/alpha/pipelines/web/delete", {})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/pipelines?biz=alpha")
    html(world, "viewer", "/console/b/alpha/pipelines/web", status=404)


def test_the_pipeline_pages_speak_chinese(world: World) -> None:
    r = world.client.patch(
        "/api/v1/users/viewer", json={"language": "zh-CN"}, headers=world.as_("viewer")
    )
    assert r.status_code == 200
    page = html(world, "viewer", "/console/pipelines")
    assert "流水线" in page and "上次运行" in page
