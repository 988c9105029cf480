"""CI/CD pipelines of a business and their runs: ``/businesses/{biz}/pipelines`` (issue 18).

Members read pipelines, runs and logs; developers and above (``app.write``) create, change,
delete, run and cancel. A run is only queued here: the runner loop of some replica claims it,
builds, pushes into the business's registry namespace and, when the pipeline names an app,
starts a gray upgrade (``gaia.store.pipelines`` holds the queue and its rules).

``POST /hooks/pipelines/{id}`` is the webhook a git host calls on a push. It carries no user
token: the body's HMAC-SHA256 under the pipeline's webhook secret, in
``X-Gaia-Signature: sha256=<hex>`` (GitHub's ``X-Hub-Signature-256`` is accepted too), is
checked in constant time, and a wrong or missing one gets the same 401 as an unknown pipeline,
so the endpoint tells nothing about which ids exist. A push to another branch than the
pipeline's is accepted and ignored.

Git credentials and the webhook secret are write-only (the secret is shown once, on create or
rotation); neither reaches a response, a record or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import secrets as random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    begin_change,
    business_for,
    inline_write,
    platform,
)
from gaia.api.pagination import Cursor, Limit
from gaia.api.schemas.base import NAME_PATTERN, Page
from gaia.api.schemas.pipelines import (
    DeployTarget,
    LastRunOut,
    LogLineOut,
    LogPage,
    PipelineCreate,
    PipelineCreated,
    PipelineOut,
    PipelineUpdate,
    RunFailureOut,
    RunOut,
    RunStepOut,
    WebhookAccepted,
)
from gaia.domain.errors import InvalidRequest, Unauthenticated
from gaia.domain.rbac import Permission
from gaia.domain.registry import NamespaceKind, parse_repository
from gaia.egress import EgressRefused, check_literal_host
from gaia.store import pipelines as store
from gaia.store.models import ROW_ID_MAX, Business, Pipeline, PipelineRun

router = APIRouter(tags=["pipelines"], route_class=CommittingRoute)
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
NamePath = Path(pattern=NAME_PATTERN, max_length=63, description="pipeline name")
NumberPath = Path(ge=1, le=ROW_ID_MAX, description="run number")
EVENT_STREAM = "text/event-stream"
MAX_WEBHOOK_BYTES = 1024 * 1024
# a push event's "after": a full commit id (a deleted branch sends forty zeros)
_COMMIT = re.compile(r"(?!0{40}$)[0-9a-f]{40}|[0-9a-f]{64}")
FOLLOW_POLL_S = 0.5
FOLLOW_MAX_S = 3600.0


def _repository(business: Business, name: str, requested: str | None) -> str:
    repo = parse_repository(requested or f"{business.name}/{name}")
    if repo.kind is not NamespaceKind.BUSINESS or repo.namespace != business.name:
        raise InvalidRequest(
            f"repository '{repo.name}' is outside the namespace of business '{business.name}' "
            f"(use {business.name}/<name>)"
        )
    return repo.name


def pipeline_out(
    request: Request, row: Pipeline, business: Business, last: PipelineRun | None = None
) -> PipelineOut:
    gaia = platform(request)
    origin = gaia.settings.external_url.rstrip("/")
    return PipelineOut(
        id=row.id,
        name=row.name,
        business=business.name,
        git_url=row.git_url,
        branch=row.branch,
        dockerfile=row.dockerfile,
        context=row.context,
        build_args=dict(row.build_args),
        repository=row.repository,
        image=f"{gaia.registry.address}/{row.repository}" if gaia.registry.address else "",
        has_git_credentials=row.git_credentials_encrypted is not None,
        deploy=(
            DeployTarget(app=row.deploy_app, instance_ids=row.deploy_instances)
            if row.deploy_app
            else None
        ),
        schedule_minutes=row.schedule_minutes,
        webhook_url=f"{origin}/api/v1/hooks/pipelines/{row.id}",
        last_run=(
            LastRunOut(
                number=last.number,
                state=last.state,
                failed_step=(last.failure or {}).get("step"),
                created_at=last.created_at,
                finished_at=last.finished_at,
            )
            if last is not None
            else None
        ),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def run_out(run: PipelineRun, row: Pipeline) -> RunOut:
    return RunOut(
        failure=RunFailureOut.model_validate(run.failure) if run.failure else None,
        pipeline=row.name,
        number=run.number,
        trigger=run.trigger,
        started_by=run.started_by,
        state=run.state,
        cancel_requested=run.cancel_requested,
        steps=[RunStepOut.model_validate(s) for s in run.steps or []],
        commit=run.commit,
        image=run.image,
        digest=run.digest,
        upgrade_id=run.upgrade_id,
        log_lines=run.log_lines,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _pipeline(
    session: Session,
    request: Request,
    principal: Any,
    biz: str,
    name: str,
    permission: Permission,
    *,
    verb: str | None = None,
) -> tuple[Business, Pipeline]:
    ctx = (
        audit(request, action=f"pipeline.{verb}", target=f"business/{biz}/pipeline/{name}")
        if verb
        else audit(request)
    )
    business = business_for(session, principal, biz, permission, ctx=ctx)
    return business, store.pipeline(session, business=business, name=name)


# --- pipelines -----------------------------------------------------------------------------


@router.get("/businesses/{biz}/pipelines", response_model=Page[PipelineOut])
def list_pipelines(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PipelineOut]:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ, ctx=audit(request))
    rows, nxt = store.page_pipelines(session, business_id=business.id, limit=limit, cursor=cursor)
    last = store.last_runs(session, pipeline_ids=[r.id for r in rows])
    return Page[PipelineOut](
        items=[pipeline_out(request, r, business, last.get(r.id)) for r in rows], next_cursor=nxt
    )


def _check_git_url(request: Request, url: str) -> None:
    """Refused at save time: a file:// URL where local repositories are off, an https URL whose
    host is an address the egress policy refuses (names are checked again before each clone,
    gaia.delivery.runner.check_git_url)."""
    if url.startswith("file://"):
        if not platform(request).settings.pipeline_local_git:
            raise InvalidRequest(
                "file:// git URLs are off on this platform (GAIA_PIPELINE_LOCAL_GIT): use https://"
            )
        return
    try:
        check_literal_host(urlsplit(url).hostname or "")
    except EgressRefused as exc:
        raise InvalidRequest(str(exc)) from None


@router.post("/businesses/{biz}/pipelines", response_model=PipelineCreated, status_code=201)
@inline_write
def create_pipeline(
    body: PipelineCreate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
) -> PipelineCreated:
    """Create a pipeline; the answer shows the webhook secret, this once."""
    ctx = audit(request, action="pipeline.create", target=f"business/{biz}/pipeline/{body.name}")
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    _check_git_url(request, body.git_url)
    secret = body.webhook_secret or random.token_urlsafe(32)
    row = store.create_pipeline(
        session,
        secrets=platform(request).secrets,
        business=business,
        name=body.name,
        fields={
            "git_url": body.git_url,
            "branch": body.branch,
            "dockerfile": body.dockerfile,
            "context": body.context,
            "build_args": dict(body.build_args),
            "repository": _repository(business, body.name, body.repository),
            "deploy_app": body.deploy.app if body.deploy else None,
            "deploy_instances": body.deploy.instance_ids if body.deploy else None,
            "schedule_minutes": body.schedule_minutes,
        },
        git_credentials=body.git_credentials,
        webhook_secret=secret,
        created_by=principal.username,
    )
    ctx.summary = f"created pipeline '{row.name}' building {row.git_url} ({row.branch})"
    out = pipeline_out(request, row, business)
    return PipelineCreated(**out.model_dump(), webhook_secret=secret)


@router.get("/businesses/{biz}/pipelines/{name}", response_model=PipelineOut)
def get_pipeline(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
) -> PipelineOut:
    business, row = _pipeline(session, request, principal, biz, name, Permission.BUSINESS_READ)
    last = store.last_runs(session, pipeline_ids=[row.id]).get(row.id)
    return pipeline_out(request, row, business, last)


@router.patch("/businesses/{biz}/pipelines/{name}", response_model=PipelineCreated)
@inline_write
def update_pipeline(
    body: PipelineUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
) -> PipelineCreated:
    """Change the fields given; ``rotate_webhook_secret`` answers the new secret, this once."""
    business, row = _pipeline(
        session, request, principal, biz, name, Permission.APP_WRITE, verb="update"
    )
    if body.git_url is not None:
        _check_git_url(request, body.git_url)
    fields: dict[str, Any] = {
        key: getattr(body, key)
        for key in ("git_url", "branch", "dockerfile", "context", "build_args")
        if getattr(body, key) is not None
    }
    if body.deploy is not None:
        fields["deploy_app"] = body.deploy.app
        fields["deploy_instances"] = body.deploy.instance_ids
    elif body.clear_deploy:
        fields["deploy_app"] = None
        fields["deploy_instances"] = None
    if body.schedule_minutes is not None:
        fields["schedule_minutes"] = body.schedule_minutes
    elif body.clear_schedule:
        fields["schedule_minutes"] = None
    secrets = platform(request).secrets
    secret = None
    if body.rotate_webhook_secret:
        secret = random.token_urlsafe(32)
        fields["webhook_secret_encrypted"] = secrets.encrypt(secret)
    store.update_pipeline(
        session,
        secrets=secrets,
        row=row,
        fields=fields,
        git_credentials=body.git_credentials,
        clear_git_credentials=body.clear_git_credentials,
    )
    out = pipeline_out(request, row, business)
    return PipelineCreated(**out.model_dump(), webhook_secret=secret)


@router.delete("/businesses/{biz}/pipelines/{name}", status_code=204)
def delete_pipeline(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
) -> Response:
    """Delete a pipeline and its runs (running builds stop); its images stay in the registry."""
    _business, row = _pipeline(
        session, request, principal, biz, name, Permission.APP_WRITE, verb="delete"
    )
    store.delete_pipeline(session, row=row)
    return Response(status_code=204)


# --- runs ----------------------------------------------------------------------------------


@router.post("/businesses/{biz}/pipelines/{name}/runs", response_model=RunOut, status_code=201)
@inline_write
def start_run(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
) -> RunOut:
    """Queue a run of the head of the pipeline's branch."""
    _business, row = _pipeline(
        session, request, principal, biz, name, Permission.APP_WRITE, verb="run"
    )
    run = store.enqueue_run(session, row=row, trigger="manual", started_by=principal.username)
    return run_out(run, row)


@router.get("/businesses/{biz}/pipelines/{name}/runs", response_model=Page[RunOut])
def list_runs(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[RunOut]:
    """Runs, newest first."""
    _business, row = _pipeline(session, request, principal, biz, name, Permission.BUSINESS_READ)
    runs, nxt = store.page_runs(session, row=row, limit=limit, cursor=cursor)
    return Page[RunOut](items=[run_out(r, row) for r in runs], next_cursor=nxt)


@router.get("/businesses/{biz}/pipelines/{name}/runs/{number}", response_model=RunOut)
def get_run(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
    number: int = NumberPath,
) -> RunOut:
    _business, row = _pipeline(session, request, principal, biz, name, Permission.BUSINESS_READ)
    return run_out(store.run_of(session, row=row, number=number), row)


@router.post("/businesses/{biz}/pipelines/{name}/runs/{number}/cancel", response_model=RunOut)
@inline_write
def cancel_run(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
    number: int = NumberPath,
) -> RunOut:
    """Cancel a queued run at once; ask the runner of a running one to stop its build."""
    _business, row = _pipeline(
        session, request, principal, biz, name, Permission.APP_WRITE, verb="cancel"
    )
    run = store.request_cancel(session, run=store.run_of(session, row=row, number=number))
    return run_out(run, row)


@router.get(
    "/businesses/{biz}/pipelines/{name}/runs/{number}/logs",
    response_model=LogPage,
    responses={200: {"content": {EVENT_STREAM: {}}, "description": "a page, or SSE"}},
)
async def run_logs(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
    number: int = NumberPath,
    after: int = Query(default=-1, ge=-1, le=ROW_ID_MAX, description="lines after this seq"),
    limit: int = Query(default=1000, ge=1, le=5000),
    follow: bool = Query(default=False, description="stream lines as they come (SSE)"),
) -> LogPage | StreamingResponse:
    """The run's log lines in order, a page at a time; ``follow=true`` with
    ``Accept: text/event-stream`` streams them until the run finishes."""
    _business, row = _pipeline(session, request, principal, biz, name, Permission.BUSINESS_READ)
    run = store.run_of(session, row=row, number=number)
    if follow:
        if EVENT_STREAM not in request.headers.get("accept", ""):
            raise HTTPException(
                406, "follow=true streams Server-Sent Events: send 'Accept: text/event-stream'"
            )
        last_event = request.headers.get("last-event-id", "").strip()
        if last_event.isdigit() and len(last_event) < 12:
            after = int(last_event)
        return StreamingResponse(
            _follow(request, run.id, after),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    lines = store.log_lines(session, run_id=run.id, after=after, limit=limit)
    return LogPage(
        items=[LogLineOut(seq=x.seq, step=x.step, line=x.line) for x in lines],
        next_after=lines[-1].seq if lines else after,
        finished=run.state in store.FINISHED,
    )


async def _follow(request: Request, run_id: int, after: int) -> AsyncIterator[str]:
    """The SSE body: new lines by polling the database (every replica writes there), an
    ``end`` event once the run has finished and every line was sent."""
    db = platform(request).db
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FOLLOW_MAX_S

    def read(after: int) -> tuple[list[LogLineOut], bool]:
        with db.read_session() as session:
            state = session.get(PipelineRun, run_id)
            done = state is None or state.state in store.FINISHED
            rows = store.log_lines(session, run_id=run_id, after=after, limit=1000)
            return [LogLineOut(seq=x.seq, step=x.step, line=x.line) for x in rows], done

    yield "retry: 3000\n\n"
    with contextlib.suppress(asyncio.CancelledError):
        while loop.time() < deadline:
            lines, done = await asyncio.to_thread(read, after)
            for line in lines:
                after = line.seq
                yield f"id: {line.seq}\ndata: {line.model_dump_json()}\n\n"
            if done and not lines:
                yield "event: end\ndata: {}\n\n"
                return
            if not lines:
                yield ": heartbeat\n\n"
                await asyncio.sleep(FOLLOW_POLL_S)


# --- the webhook ---------------------------------------------------------------------------


def _signature(request: Request) -> str:
    for header in ("x-gaia-signature", "x-hub-signature-256"):
        value = request.headers.get(header, "")
        if value:
            return value
    return ""


@router.post("/hooks/pipelines/{pipeline_id}", response_model=WebhookAccepted, status_code=202)
async def pipeline_webhook(
    request: Request,
    session: SessionDep,
    pipeline_id: int = Path(ge=1, le=ROW_ID_MAX),
) -> WebhookAccepted:
    """A push from a git host: queue a run when the push is to the pipeline's branch.
    Authenticated by ``X-Gaia-Signature: sha256=<hex HMAC-SHA256 of the body>``."""
    ctx = audit(request, action="pipeline.webhook")
    ctx.actor = "webhook"
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise InvalidRequest(f"a webhook body has at most {MAX_WEBHOOK_BYTES} bytes")
    refused = Unauthenticated("the webhook signature does not match")
    await begin_change(request, session)  # never block the loop on SQLite's writer turn
    row = session.get(Pipeline, pipeline_id)
    given = _signature(request).encode("ascii", errors="replace")
    if row is None:
        # the same work as a known pipeline, so timing does not tell which ids exist
        hmac.compare_digest(given, b"sha256=" + b"0" * 64)
        raise refused
    key = store.webhook_secret(row, secrets=platform(request).secrets).encode()
    expected = b"sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(given, expected):
        raise refused
    business = session.get(Business, row.business_id)
    audit(
        request,
        target=f"business/{business.name if business else '?'}/pipeline/{row.name}",
        business=business.name if business else None,
    )
    ref, commit, deleted = _push(body)
    if ref is not None and ref not in (row.branch, f"refs/heads/{row.branch}"):
        return WebhookAccepted(pipeline=row.name, run=None, message=f"ignored a push to {ref}")
    if deleted:
        return WebhookAccepted(
            pipeline=row.name, run=None, message="ignored: the push deleted the branch"
        )
    run = store.enqueue_run(
        session, row=row, trigger="webhook", started_by="webhook", commit=commit
    )
    audit(request, summary=f"run {run.number} queued" + (f" for commit {commit}" if commit else ""))
    return WebhookAccepted(pipeline=row.name, run=run.number, message="run queued")


def _push(body: bytes) -> tuple[str | None, str, bool]:
    """``ref``, ``after`` (the pushed commit, when a full id) and whether the push deleted the
    branch, of a GitHub/Gitea/GitLab push event, when the body is one."""
    try:
        event = json.loads(body) if body else {}
    except ValueError:
        return None, "", False
    if not isinstance(event, dict):
        return None, "", False
    ref = event.get("ref")
    after = event.get("after") or event.get("checkout_sha") or ""
    commit = after if isinstance(after, str) and _COMMIT.fullmatch(after) else ""
    deleted = event.get("deleted") is True or after == "0" * 40
    return (ref if isinstance(ref, str) else None), commit, deleted
