"""Kubernetes-style events with aggregation.

An event is identified by (business, cluster, object, reason, message, type): a repeat bumps
``count`` and ``last_seen`` instead of adding a row, as ``kubectl get events`` shows. The upsert is
one ``INSERT ... ON CONFLICT DO UPDATE`` on both SQLite and PostgreSQL, so concurrent repeats
count correctly without a read-modify-write race.

``page_events`` is the read side: the filtered, newest-first listing behind ``GET /events``.
See docs/architecture.md, "store".
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import Table, and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from gaia.store.models import Event, utcnow
from gaia.store.paging import page_of

EventType = Literal["Normal", "Warning"]


def event_key(
    *,
    business: str,
    cluster: str,
    object_kind: str,
    object_name: str,
    reason: str,
    message: str,
    type: str,
) -> str:
    raw = "\x1f".join([business, cluster, object_kind, object_name, reason, message, type])
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def emit(
    session: Session,
    *,
    object_kind: str,
    object_name: str,
    reason: str,
    message: str,
    type: EventType = "Normal",
    business_id: int | None = None,
    business: str = "",
    cluster: str = "",
    user: str = "",
    now: dt.datetime | None = None,
) -> None:
    now = now or utcnow()
    key = event_key(
        business=business,
        cluster=cluster,
        object_kind=object_kind,
        object_name=object_name,
        reason=reason,
        message=message,
        type=type,
    )
    values = {
        "key": key,
        "business_id": business_id,
        "business": business,
        "cluster": cluster,
        "object_kind": object_kind,
        "object_name": object_name,
        "reason": reason,
        "message": message,
        "type": type,
        "count": 1,
        "first_seen": now,
        "last_seen": now,
        "user": user,
    }
    if session.autoflush:
        session.flush()  # as an ORM statement does: the rows it may refer to go first
    session.execute(_upsert(session.get_bind().dialect.name), values)


@functools.cache
def _upsert(dialect: str, *, many: bool = False) -> Any:
    """The events upsert, built once per dialect: the values travel as parameters, so SQLAlchemy
    neither rebuilds the statement nor walks its values for a cache key at every call (a write
    request emits at least one event; a statement made with a batch's rows as VALUES was
    compiled again at every call, most of a small batch's cost).

    ``emit``'s (one row): a repeat counts one more and keeps the row's user when the new one is
    empty. ``emit_many``'s (``many``, executed over a list of rows: the driver's executemany):
    a row adds its folded count, and only what happened after the row's last occurrence counts
    (a new controller, after a restart or as a new leader, hands over again every event its
    cluster still holds)."""
    table = cast(Table, Event.__table__)
    insert = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
    if many:
        return insert.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "count": table.c.count + insert.excluded.count,
                "last_seen": insert.excluded.last_seen,
            },
            where=table.c.last_seen < insert.excluded.last_seen,
        )
    return insert.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "count": table.c.count + 1,
            "last_seen": insert.excluded.last_seen,
            "user": func.coalesce(func.nullif(insert.excluded.user, ""), table.c.user),
        },
    )


@dataclass(frozen=True, slots=True)
class NewEvent:
    object_kind: str
    object_name: str
    reason: str
    message: str
    type: EventType = "Normal"
    business_id: int | None = None
    business: str = ""
    cluster: str = ""
    user: str = ""
    at: dt.datetime | None = None


def emit_many(session: Session, batch: Sequence[NewEvent], *, chunk: int = 500) -> None:
    """Emit many events with one upsert executed for every row, ``chunk`` rows a call: a pass
    of the app controller can produce thousands (every instance's Scheduled, Pulled, Created,
    Started, ...).

    Repeats inside the batch are folded first (one row, its count and times)."""
    now = utcnow()
    folded: dict[str, dict[str, Any]] = {}
    for ev in batch:
        at = ev.at or now
        key = event_key(
            business=ev.business,
            cluster=ev.cluster,
            object_kind=ev.object_kind,
            object_name=ev.object_name,
            reason=ev.reason,
            message=ev.message,
            type=ev.type,
        )
        row = folded.get(key)
        if row is not None:
            row["count"] += 1
            row["last_seen"] = max(row["last_seen"], at)
            row["first_seen"] = min(row["first_seen"], at)
            continue
        folded[key] = {
            "key": key,
            "business_id": ev.business_id,
            "business": ev.business,
            "cluster": ev.cluster,
            "object_kind": ev.object_kind,
            "object_name": ev.object_name,
            "reason": ev.reason,
            "message": ev.message,
            "type": ev.type,
            "count": 1,
            "first_seen": at,
            "last_seen": at,
            "user": ev.user,
        }
    rows = list(folded.values())
    if not rows:
        return
    if session.autoflush:
        session.flush()  # as an ORM statement does: the rows it may refer to go first
    stmt = _upsert(session.get_bind().dialect.name, many=True)
    for start in range(0, len(rows), chunk):
        session.execute(stmt, rows[start : start + chunk])


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What ``GET /events`` narrows by; an empty field does not narrow."""

    business: str | None = None
    cluster: str | None = None
    object_kind: str | None = None
    object_name: str | None = None
    reason: str | None = None
    type: str | None = None
    # the events of this app and of its instances (named "{app}-{id}")
    app: str | None = None


def page_events(
    session: Session,
    *,
    business_ids: set[int] | None,
    where: EventFilter,
    limit: int,
    cursor: str | None,
) -> tuple[list[Event], str | None]:
    """Events of ``business_ids`` (all for ``None``) matching ``where``, most recently created
    first."""
    stmt = select(Event)
    if business_ids is not None:
        stmt = stmt.where(Event.business_id.in_(business_ids))
    app = where.app
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
        (Event.business, where.business),
        (Event.cluster, where.cluster),
        (Event.object_kind, where.object_kind),
        (Event.object_name, where.object_name),
        (Event.reason, where.reason),
        (Event.type, where.type),
    ):
        if value:
            stmt = stmt.where(column == value)
    return page_of(
        session, stmt, key=Event.id, limit=limit, cursor=cursor, descending=True, numeric=True
    )
