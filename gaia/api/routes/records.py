"""Operation records and events: read-only views, filtered, newest first.

No route here writes: records are appended by the recorder middleware and events by the
platform itself. Platform admins see everything; other users see the records and events of their
own businesses (platform-level ones, such as a cluster registration, stay with the admins).
The queries are ``gaia.store.records`` and ``gaia.store.events``; see docs/architecture.md, "api".
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from gaia.api.deps import CommittingRoute, PrincipalDep, SessionDep, inline_read
from gaia.api.pagination import Cursor, Limit
from gaia.api.schemas.base import Page
from gaia.api.schemas.records import EventOut, RecordOut
from gaia.domain.errors import NotFound
from gaia.store.events import EventFilter, page_events
from gaia.store.models import OperationRecord
from gaia.store.records import RecordFilter, page_records, record_visible_to

router = APIRouter(tags=["records"], route_class=CommittingRoute)
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


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
    rows, nxt = page_records(
        session,
        business_ids=principal.business_scope(),
        where=RecordFilter(
            actor=actor,
            business=business,
            cluster=cluster,
            action=action,
            target=target,
            result=result,
            since=since,
            until=until,
        ),
        limit=limit,
        cursor=cursor,
    )
    return Page[RecordOut](items=[record_out(r) for r in rows], next_cursor=nxt)


@router.get("/records/{record_id}", response_model=RecordOut)
@inline_read
def get_record(
    principal: PrincipalDep, session: SessionDep, record_id: int = Path(ge=1, le=2**62)
) -> RecordOut:
    row = record_visible_to(session, business_ids=principal.business_scope(), record_id=record_id)
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
    rows, nxt = page_events(
        session,
        business_ids=principal.business_scope(),
        where=EventFilter(
            business=business,
            cluster=cluster,
            object_kind=object_kind,
            object_name=object_name,
            reason=reason,
            type=type,
            app=app,
        ),
        limit=limit,
        cursor=cursor,
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
