"""Operation records and events: read-only views, filtered, newest first.

No route here writes: records are appended by the recorder middleware and events by the
platform itself. Platform admins see everything; other users see the records and events of their
own businesses (platform-level ones, such as a cluster registration, stay with the admins).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Path, Query
from sqlalchemy import Select, and_, or_, select

from gaia.api.deps import Principal, PrincipalDep, SessionDep
from gaia.api.pagination import Cursor, Limit, page_of
from gaia.api.schemas.base import EventOut, Page, RecordOut
from gaia.domain.errors import NotFound
from gaia.store.models import Event, OperationRecord

router = APIRouter(tags=["records"])
T = TypeVar("T", OperationRecord, Event)
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


def _scoped(stmt: Select[T], model: type[T], principal: Principal) -> Select[T]:
    if principal.is_platform_admin:
        return stmt
    return stmt.where(model.business_id.in_(principal.business_ids()))


def record_out(r: OperationRecord) -> RecordOut:
    return RecordOut(
        id=r.id,
        at=r.at,
        actor=r.actor,
        business=r.business,
        cluster=r.cluster,
        action=r.action,
        method=r.method,
        path=r.path,
        target=r.target,
        summary=r.summary,
        result="success" if r.result == "success" else "failure",
        status_code=r.status_code,
        error=r.error,
    )


@router.get("/records", response_model=Page[RecordOut])
def list_records(
    principal: PrincipalDep,
    session: SessionDep,
    actor: Text = None,
    business: Text = None,
    cluster: Text = None,
    action: Text = None,
    target: Text = None,
    result: Literal["success", "failure"] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[RecordOut]:
    stmt = _scoped(select(OperationRecord), OperationRecord, principal)
    if actor:
        stmt = stmt.where(OperationRecord.actor == actor)
    if business:
        stmt = stmt.where(OperationRecord.business == business)
    if cluster:
        stmt = stmt.where(OperationRecord.cluster == cluster)
    if action:
        stmt = stmt.where(OperationRecord.action == action)
    if target:
        stmt = stmt.where(OperationRecord.target.startswith(target, autoescape=True))
    if result:
        stmt = stmt.where(OperationRecord.result == result)
    if since:
        stmt = stmt.where(OperationRecord.at >= since)
    if until:
        stmt = stmt.where(OperationRecord.at < until)
    rows, nxt = page_of(
        session,
        stmt,
        key=OperationRecord.id,
        limit=limit,
        cursor=cursor,
        descending=True,
        numeric=True,
    )
    return Page[RecordOut](items=[record_out(r) for r in rows], next_cursor=nxt)


@router.get("/records/{record_id}", response_model=RecordOut)
def get_record(
    principal: PrincipalDep, session: SessionDep, record_id: int = Path(ge=1, le=2**62)
) -> RecordOut:
    row = session.scalars(
        _scoped(select(OperationRecord), OperationRecord, principal).where(
            OperationRecord.id == record_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"record {record_id} not found")
    return record_out(row)


@router.get("/events", response_model=Page[EventOut], tags=["events"])
def list_events(
    principal: PrincipalDep,
    session: SessionDep,
    business: Text = None,
    cluster: Text = None,
    object_kind: Text = None,
    object_name: Text = None,
    reason: Text = None,
    type: Literal["Normal", "Warning"] | None = None,
    app: Annotated[
        str | None,
        Query(
            max_length=40,
            pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$",
            description="the events of this app and of its instances (``{app}-{id}``)",
        ),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[EventOut]:
    """Events, most recently created first; ``count`` and ``last_seen`` show repeats."""
    stmt = _scoped(select(Event), Event, principal)
    if app:
        # an instance is named "{app}-{id}"; "NOT LIKE app-%-%" keeps out the instances of an
        # app whose name only starts with "{app}-" (app names hold no LIKE wildcards)
        stmt = stmt.where(
            or_(
                and_(Event.object_kind != "Instance", Event.object_name == app),
                and_(
                    Event.object_kind == "Instance",
                    Event.object_name.like(f"{app}-%"),
                    Event.object_name.not_like(f"{app}-%-%"),
                ),
            )
        )
    for column, value in (
        (Event.business, business),
        (Event.cluster, cluster),
        (Event.object_kind, object_kind),
        (Event.object_name, object_name),
        (Event.reason, reason),
        (Event.type, type),
    ):
        if value:
            stmt = stmt.where(column == value)
    rows, nxt = page_of(
        session, stmt, key=Event.id, limit=limit, cursor=cursor, descending=True, numeric=True
    )
    return Page[EventOut](
        items=[
            EventOut(
                id=e.id,
                business=e.business,
                cluster=e.cluster,
                object_kind=e.object_kind,
                object_name=e.object_name,
                reason=e.reason,
                message=e.message,
                type="Warning" if e.type == "Warning" else "Normal",
                count=e.count,
                first_seen=e.first_seen,
                last_seen=e.last_seen,
                user=e.user,
            )
            for e in rows
        ],
        next_cursor=nxt,
    )
